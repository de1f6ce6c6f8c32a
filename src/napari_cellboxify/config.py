"""One configuration object shared by the CLI, the napari widget and checkpoints.

Defaults are the paper's values (CellBoxify on LIVECell, BoxSnake's losses) and are named, so that a config
file only needs to list what differs. A checkpoint embeds ``CellBoxifyConfig.to_dict()`` so that it can rebuild
its own model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_VERSION = 1
# The settings of model.tta (test-time augmentation, tta.py), for the CLI, the panel and validation.
TTA_MODES = ("off", "flips", "flips+scales")
# train.trainable: which parts of the model a run trains (train.py TRAINED_PARTS maps each to parameter names).
TRAINABLE = ("all", "heads", "detector", "box_heads", "polygon_head")


class ConfigError(ValueError):
    """A configuration value or file is not usable; the message names the key."""


@dataclass
class ModelConfig:
    backbone: str = "resnet50"  # resnet50 | resnet34 | resnet18 (lighter, for CPU work)
    pretrained_backbone: bool = True  # ImageNet weights when they can be downloaded; falls back to random init
    # "frozen_bn" goes with ImageNet weights (torchvision's default); "group" (GroupNorm) trains from scratch.
    norm: str = "frozen_bn"
    trainable_backbone_layers: int = 3  # as torchvision's reference with ImageNet weights; 5 from scratch
    fpn_channels: int = 256
    representation_size: int = 1024  # width of the two-layer box head
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)  # one size per FPN level P2..P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 3000
    rpn_post_nms_top_n_test: int = 3000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 2000
    # polygon head
    num_vertices: int = 64
    refine_stages: int = 3
    # Times the head runs its stages at inference, each pass from the last one's polygons (training supervises
    # one); 2 measured best (RESULTS.md, "Refinement passes at inference"). An inference setting.
    refine_passes: int = 2
    polygon_roi_size: int = 14
    head_channels: int = 128
    polygon_init: str = "ellipse"  # ellipse | box: the contour the refinement starts from, inside each box
    # The zoom the network sees pixels at (cells have a physical size; images are not resized to a fixed side).
    # The model's default: a call may pass another (``model(images, scale=...)``, ``Predictor.image_scale``).
    image_scale: float = 1.0
    paste_masks: bool = True  # default of ``model(images, paste=...)``: full-resolution masks beside the polygons
    inference_chunk: int = 500  # RoIs per polygon-head call at inference (bounds memory with 2,000 detections)
    # At inference, clip every vertex into its box (the detection's, or the box the user drew): a cell's mask
    # lies inside its box, as Mask R-CNN's masks do by construction.
    clip_polygons_to_box: bool = True
    # Test-time augmentation at inference (tta.py): "off"; "flips" (the 8 flips/transposes, boxes fused,
    # outlines averaged); "flips+scales" (and 4 flips at 0.8x and 1.25x zoom). Gains and cost: RESULTS.md,
    # "Test-time augmentation".
    tta: str = "off"


@dataclass
class LossConfig:
    supervision: str = "box"  # box (bbox only) | mask (full masks, the reference with the same net)
    # alpha, the CIoU term. 4, not the paper's 1: with 1 the pairwise terms pull vertices past their boxes
    # (docs/experiments/2026-11-27-loss-weights.md).
    unary_weight: float = 4.0
    # beta, the local pairwise term; gamma (below) must outweigh it on phase contrast, where the normalised
    # Chan-Vese term is what ranks the true contour first (RESULTS.md, "Loss ranking and fit on real cells").
    local_weight: float = 0.5
    global_weight: float = 1.0  # gamma
    global_normalize: bool = True  # Chan-Vese energy / crop variance (1 - Otsu separability), contrast-free
    local_kernel: int = 3
    local_dilation: int = 2
    # Neighbours count as "similar" when exp(-scale * |dI|) >= threshold, intensities in [0, 1].
    local_similarity_scale: float = 10.0
    # 0.7 (|dI| <= 0.036), not BoxInst's 0.3 for LAB colour: CLAHE'd phase contrast has low-contrast cell edges.
    local_similarity_threshold: float = 0.7
    # Image channel the Chan-Vese term separates: "contrast" (local std, see losses.pairwise.local_contrast) or
    # "intensity". Phase-contrast cells differ from background in texture, not in mean intensity.
    global_channel: str = "contrast"
    contrast_window: int = 5
    raster_size: int = 64
    raster_padding: float = 4.0  # px added around the GT box for the crop the polygon is rasterised in
    inv_smoothness: float = 0.1
    # Pairwise terms ramp up linearly over this many steps when training from scratch (they are noise until
    # proposals overlap cells; the paper used 10k of 90k iterations). A step count, not a fraction of
    # train.steps, so that a run stopped by a time budget still reaches them. Training from weights skips it.
    pairwise_warmup_steps: int = 500
    # delta, the box-fill prior (losses/fill.py): penalises polygons that cover less than min_fill of their GT
    # box, the bound every convex shape touching its box's four sides meets. On, because long box-only runs
    # otherwise turn polygons concave (docs/experiments/2026-11-27-long-training-and-fresh-mask-branch.md).
    fill_weight: float = 4.0
    min_fill: float = 0.5
    max_polygon_rois_per_image: int = 64  # positives sampled for the polygon losses (bounds CPU cost)


@dataclass
class DataConfig:
    clahe: bool = True
    clahe_clip_limit: float = 0.01
    # Training scales are shorter-side sizes relative to reference_size (LIVECell's 520 px), i.e. zoom factors.
    train_sizes: tuple[int, ...] = (440, 480, 520, 580, 620)
    reference_size: int = 520
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    crop_size: int | None = 384  # random crops bound the per-step cost on CPU; None trains on whole images
    min_box_size: float = 2.0  # boxes smaller than this (px, after crop) are dropped
    # At most this many boxes train in one crop (a random subset beyond it, with a warning): the detector's
    # matching compares every anchor with every box, so memory would follow the boxes of a crowded file. A
    # 320 px crop of LIVECell's densest image holds about 400.
    max_boxes_per_crop: int = 1000
    # "boxes": each labelled image trains only inside the rectangle that holds its boxes (plus half a median box
    # side), so that the unboxed rest of a partly annotated image is not taught as background
    # (data/annotated_area.py). "image": the whole image, for files that box every cell everywhere.
    annotated_area: str = "boxes"
    # Self-training on unlabeled images: a COCO file of boxes a trained model found, each with its ``score``
    # (``cellboxify predict --format boxes``), given to ``cellboxify train --pseudo-labels``. Confident boxes
    # train as cells; the uncertain band becomes ignore regions, so that a cell the model was unsure of is not
    # taught as background (missing labels would be).
    pseudo_score_thresh: float = 0.7  # boxes scoring at least this are cells
    pseudo_ignore_thresh: float = 0.3  # boxes scoring in [this, pseudo_score_thresh) are ignore regions
    pseudo_fraction: float = 0.5  # share of training samples drawn from the pseudo-labeled images


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_drop_fractions: tuple[float, ...] = (0.75, 0.92)  # x0.1 at these fractions of the schedule
    # Steps of linear learning-rate warm-up; None: a tenth of the schedule, at most 500. A fine-tune that ends by
    # time (finetune.py) sets it, as its step count is a ceiling, not a schedule.
    warmup_steps: int | None = None
    grad_clip: float = 10.0
    # The parts a run trains; the rest stay as loaded. "polygon_head": only the mask branch (refit it on a fixed
    # detector); "heads": RPN, box head and polygon head; "detector": everything but the polygon head (what
    # finetune.py trains); "box_heads": only the RPN and the box head.
    trainable: str = "all"  # all | heads | detector | box_heads | polygon_head
    # Start the mask branch afresh (its start contour) after loading --init weights: after long joint box-only
    # training a fresh head on the fixed detector beats the drifted one
    # (docs/experiments/2026-11-27-long-training-and-fresh-mask-branch.md; weights/README.md's second stages).
    reset_polygon_head: bool = False
    # > 0: also keep an exponential moving average of the weights with this decay (ema.py) and ship it as
    # model.pt; 0 ships the last step's weights. 0.998 averages about the last 500 steps (fewer in short runs).
    ema_decay: float = 0.0
    amp: bool = True  # used on CUDA only
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps


@dataclass
class CellBoxifyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    # --- (de)serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellBoxifyConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "version" or f.name not in data:
                continue
            kwargs[f.name] = _section_from_dict(f.name, _SECTIONS[f.name], data[f.name])
        config = cls(**kwargs)
        config.validate()
        return config

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = _dump(self.to_dict(), path.suffix)
        from .io_utils import atomic_write_text

        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "CellBoxifyConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # yaml and json raise different types; both mean "not parseable"
            raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
        return cls.from_dict(data or {})

    def validate(self) -> None:
        m, lo, d, t = self.model, self.loss, self.data, self.train
        checks = [
            (m.backbone in ("resnet50", "resnet34", "resnet18"), "model.backbone must be resnet50, resnet34 or resnet18"),
            (m.norm in ("frozen_bn", "group"), "model.norm must be frozen_bn or group"),
            (0 <= m.trainable_backbone_layers <= 5, "model.trainable_backbone_layers must be 0..5"),
            (len(m.anchor_sizes) == 5, "model.anchor_sizes needs one size per FPN level (5)"),
            (m.num_vertices >= 8, "model.num_vertices must be >= 8"),
            (m.refine_passes >= 1, "model.refine_passes must be >= 1"),
            (m.polygon_init in ("ellipse", "box"), "model.polygon_init must be ellipse or box"),
            (m.image_scale > 0, "model.image_scale must be > 0"),
            (m.detections_per_img > 0, "model.detections_per_img must be > 0"),
            (m.tta in TTA_MODES, f"model.tta must be {', '.join(TTA_MODES[:-1])} or {TTA_MODES[-1]}"),
            (lo.supervision in ("box", "mask"), "loss.supervision must be box or mask"),
            (t.trainable in TRAINABLE, f"train.trainable must be one of {', '.join(TRAINABLE)}"),
            (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1) (0: no weight average)"),
            (lo.global_channel in ("contrast", "intensity"), "loss.global_channel must be contrast or intensity"),
            (lo.contrast_window >= 3 and lo.contrast_window % 2 == 1, "loss.contrast_window must be an odd number >= 3"),
            (lo.raster_size >= 8, "loss.raster_size must be >= 8"),
            (lo.pairwise_warmup_steps >= 0, "loss.pairwise_warmup_steps must be >= 0"),
            (lo.fill_weight >= 0, "loss.fill_weight must be >= 0"),
            (0 <= lo.min_fill < 1, "loss.min_fill must be in [0, 1)"),
            (lo.inv_smoothness > 0, "loss.inv_smoothness must be > 0"),
            (d.crop_size is None or d.crop_size >= 32, "data.crop_size must be None or >= 32"),
            (d.max_boxes_per_crop >= 1, "data.max_boxes_per_crop must be >= 1"),
            (d.annotated_area in ("boxes", "image"), "data.annotated_area must be boxes or image"),
            (len(d.train_sizes) > 0, "data.train_sizes must not be empty"),
            (0.0 <= d.pseudo_ignore_thresh <= d.pseudo_score_thresh <= 1.0,
             "data.pseudo_ignore_thresh <= data.pseudo_score_thresh, both in [0, 1]"),
            (0.0 < d.pseudo_fraction < 1.0, "data.pseudo_fraction must be in (0, 1)"),
            (t.steps > 0, "train.steps must be > 0"),
            (t.warmup_steps is None or (type(t.warmup_steps) is int and t.warmup_steps >= 0),
             "train.warmup_steps must be null or an integer >= 0"),
            (t.batch_size > 0, "train.batch_size must be > 0"),
            (t.lr > 0, "train.lr must be > 0"),
            (t.device in ("auto", "cpu", "cuda", "mps"), "train.device must be auto, cpu, cuda or mps"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "train": TrainConfig}
# Keys that earlier versions wrote into checkpoints and no longer mean anything: dropped on load, so that those
# checkpoints still load (a typo in a user's file is still an error).
_RETIRED = {"loss": {"pairwise_warmup_fraction"}}


def _section_from_dict(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{name}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if k not in _RETIRED.get(name, set())}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{name}': {', '.join(sorted(unknown))}")
    defaults = cls()
    out = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        out[key] = _coerce(f"{name}.{key}", value, default)
    return cls(**out)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert JSON/YAML values to the type of the default (lists -> tuples), naming the key on mismatch."""
    if value is None:
        return None
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list")
        kind = type(default[0]) if default else float
        try:
            return tuple(kind(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a list of {kind.__name__}") from None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if isinstance(default, (int, float)) and default is not None:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads "1e-4" and "5e-4" -- how everyone writes a learning rate -- as strings.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number")
        if isinstance(default, int) and not isinstance(default, bool):
            if float(value) != int(value):
                raise ConfigError(f"{key} must be an integer")
            return int(value)
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string")
    return value


def _dump(data: dict[str, Any], suffix: str) -> str:
    if suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)
    return json.dumps(data, indent=2)


def apply_overrides(config: CellBoxifyConfig, overrides: list[str]) -> CellBoxifyConfig:
    """A copy of ``config`` with ``section.key=value`` overrides (detectron2's ``opts``), values parsed as YAML.

    ``["loss.unary_weight=4", "data.crop_size=null"]``. Unknown keys and wrong types get a ConfigError naming
    the override, as a config file would.
    """
    data = config.to_dict()
    for item in overrides:
        section, name, value = parse_override(item)
        data[section][name] = value
    result = CellBoxifyConfig.from_dict(data)
    result.validate()
    return result


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, value), checked against the schema (known key, value of the
    key's type) but not against the other values, which only the whole config can be."""
    import yaml

    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    if section not in _SECTIONS:
        raise ConfigError(f"override {item!r}: unknown section '{section}'")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: cannot parse the value") from None
    if isinstance(getattr(_SECTIONS[section](), name, None), str) and isinstance(value, bool):
        value = text.strip()  # YAML 1.1 reads off/on/yes/no as booleans: model.tta=off means the string
    _section_from_dict(section, _SECTIONS[section], {name: value})
    return section, name, value
