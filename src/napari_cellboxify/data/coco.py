"""COCO annotations through pycocotools, validated, with images resolved safely under one folder.

In box supervision only ``bbox`` is read: segmentations in the file are never touched, so a file with every
``segmentation`` deleted gives identical training batches (tested). Full-mask supervision decodes the
segmentations with pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CellBoxifyConfig
from .annotated_area import annotated_area, crop_to_area
from .dataset import Sample
from .images import image_planes, read_image
from .transforms import ImageError, normalize_image


class CocoError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass
class CocoImage:
    id: int
    file_name: str
    path: Path
    boxes_xyxy: np.ndarray  # (N, 4) float32
    ann_ids: list[int] = field(default_factory=list)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def resolve_image_path(images_dir: Path, file_name: Any) -> Path:
    """``images_dir / file_name``, refusing absolute paths and anything that escapes ``images_dir``."""
    if not isinstance(file_name, str) or not file_name:
        raise CocoError(f"image file_name must be a non-empty string, got {file_name!r}")
    candidate = Path(file_name)
    if candidate.is_absolute() or file_name.startswith(("/", "\\")) or (len(file_name) > 1 and file_name[1] == ":"):
        raise CocoError(f"refused absolute image path {file_name!r}: images must lie under {images_dir}")
    root = images_dir.resolve()
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise CocoError(f"refused image path {file_name!r}: it leads outside {images_dir}")
    return resolved


def read_coco_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CocoError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CocoError(f"{path} is not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CocoError(f"{path}: a COCO file is a JSON object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if key not in data:
            raise CocoError(f"{path}: missing key '{key}'")
        if not isinstance(data[key], list):
            raise CocoError(f"{path}: '{key}' must be a list")
    return data


@dataclass
class CocoFile:
    """A validated COCO file. ``skipped`` lists (reason, count) for annotations that could not be used."""

    path: Path
    images_dir: Path
    images: list[CocoImage]
    data: dict[str, Any]
    skipped: dict[str, int]

    def pycocotools(self):
        """The pycocotools index of the (validated) data, built quietly."""
        return coco_index(self.data)


def coco_index(data: dict[str, Any]):
    """A pycocotools ``COCO`` over a COCO dict, built without pycocotools' prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: str | Path, images_dir: str | Path, require_images: bool = True) -> CocoFile:
    """Read and validate a COCO file; bad annotations are skipped and counted, bad structure raises CocoError."""
    path, images_dir = Path(path), Path(images_dir)
    if not images_dir.is_dir():
        raise CocoError(f"image folder not found: {images_dir}")
    data = read_coco_json(path)
    images: dict[int, CocoImage] = {}
    clean_images = []
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise CocoError(f"{path}: every image needs 'id' and 'file_name' (got {str(entry)[:80]})")
        if not isinstance(entry["id"], int) or isinstance(entry["id"], bool):
            raise CocoError(f"{path}: image id must be an integer, got {entry['id']!r}")
        if entry["id"] in images:
            raise CocoError(f"{path}: image id {entry['id']} appears twice")
        image_path = resolve_image_path(images_dir, entry["file_name"])
        if require_images and not image_path.is_file():
            raise CocoError(f"{path}: image {entry['file_name']!r} not found in {images_dir}")
        images[entry["id"]] = CocoImage(entry["id"], entry["file_name"], image_path, np.zeros((0, 4), np.float32))
        clean_images.append(entry)

    skipped: dict[str, int] = {}
    boxes: dict[int, list] = {i: [] for i in images}
    clean_anns = []
    sizes = {entry["id"]: size for entry in clean_images if (size := _image_size(entry)) is not None}
    for k, ann in enumerate(data["annotations"]):
        reason = _annotation_problem(ann, images, sizes)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[ann["image_id"]].append((x, y, x + w, y + h))
        ann = dict(ann)
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", w * h)
        ann.setdefault("category_id", 1)
        images[ann["image_id"]].ann_ids.append(ann["id"])
        clean_anns.append(ann)
    for image_id, image in images.items():
        image.boxes_xyxy = np.asarray(boxes[image_id], dtype=np.float32).reshape(-1, 4)
    clean = dict(data, images=clean_images, annotations=clean_anns)
    clean.setdefault("categories", [{"id": 1, "name": "cell"}])
    return CocoFile(path, images_dir, list(images.values()), clean, skipped)


def boxed_images(coco: CocoFile) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(file_name, image, boxes_xyxy), ...]`` for the images of ``coco`` that have boxes, read in order (an
    empty list when none has). A stack is refused: COCO boxes belong to 2-D images (the panel's export and
    fine-tuning project write one image per plane)."""
    items = []
    for entry in coco.images:
        if len(entry.boxes_xyxy):
            image = read_image(entry.path)
            planes = len(image_planes(image))
            if planes > 1:
                raise ValueError(f"{entry.file_name} is a stack of {planes} planes; COCO boxes belong to 2-D images "
                                 "(the panel's export writes one image per plane)")
            items.append((entry.file_name, image, entry.boxes_xyxy))
    return items


# A box may reach past its image's edge (a box drawn to the border, rounding) by this share of the image's side,
# at least SLACK_PX; beyond that it is not a cell of this image (e.g. [10, 10, 1e30, 1e30]).
SLACK_SHARE, SLACK_PX = 0.1, 16.0
# Without the image's size in the file: no microscope image is a million pixels on a side.
MAX_BOX_SIDE = 1e6


def _annotation_problem(ann: Any, images: dict[int, CocoImage], sizes: dict[int, tuple[float, float]]) -> str | None:
    if not isinstance(ann, dict):
        return "not an object"
    if ann.get("image_id") not in images:
        return "unknown image_id"
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return "bbox missing, not 4 numbers, or NaN/inf"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return "bbox with zero or negative size"
    size = sizes.get(ann["image_id"])
    if size is None:
        return "bbox larger than any image" if max(w, h) > MAX_BOX_SIDE or max(abs(x), abs(y)) > MAX_BOX_SIDE else None
    width, height = size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "bbox outside its image"
    sx, sy = max(SLACK_PX, SLACK_SHARE * width), max(SLACK_PX, SLACK_SHARE * height)
    if x < -sx or y < -sy or x + w > width + sx or y + h > height + sy:
        return "bbox reaching far outside its image"
    return None


def _image_size(entry: dict) -> tuple[float, float] | None:
    """(width, height) of a COCO image entry when it gives both as positive numbers."""
    w, h = entry.get("width"), entry.get("height")
    return (float(w), float(h)) if _is_number(w) and _is_number(h) and w > 0 and h > 0 else None


class CocoSource:
    """Training source over a COCO file: normalised images cached in memory, boxes (and masks in mask mode)."""

    def __init__(self, coco: CocoFile, config: CellBoxifyConfig, with_masks: bool = False):
        self.coco, self.config, self.with_masks = coco, config, with_masks
        self.images = [im for im in coco.images if len(im.boxes_xyxy)]
        self._cache: dict[int, np.ndarray] = {}
        self._index = coco.pycocotools() if with_masks else None

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        if index not in self._cache:
            d, entry = self.config.data, self.images[index]
            try:
                self._cache[index] = normalize_image(read_image(entry.path), d.clahe, d.clahe_clip_limit)
            except ImageError as exc:  # e.g. a stack: name the file, or a user with 100 images cannot find it
                raise CocoError(f"{self.coco.path}: image {entry.file_name!r}: {exc}") from None
        return self._cache[index]

    def load(self, index: int) -> Sample:
        entry = self.images[index]
        image = self.image(index)
        masks = None
        if self.with_masks:
            from pycocotools import mask as mask_utils

            h, w = image.shape
            anns = self._index.loadAnns(entry.ann_ids)
            rles = [self._index.annToRLE(dict(a, segmentation=a.get("segmentation") or []))
                    if a.get("segmentation") else None for a in anns]
            if any(r is None for r in rles):
                raise CocoError(f"{self.coco.path}: full-mask training needs a segmentation for every annotation")
            masks = np.moveaxis(mask_utils.decode(rles), -1, 0) if rles else np.zeros((0, h, w), np.uint8)
        boxes = entry.boxes_xyxy.copy()
        if self.config.data.annotated_area == "boxes":
            image, boxes, masks = crop_to_area(image, boxes, masks, annotated_area(boxes, image.shape))
        return Sample(image, boxes, masks, entry.file_name)


class PseudoLabelSource(CocoSource):
    """Unlabeled images with the boxes a trained model found there (self-training).

    Every annotation needs a ``score`` (``cellboxify predict --format boxes`` writes one). Boxes scoring at least
    ``data.pseudo_score_thresh`` train as cells; those in ``[pseudo_ignore_thresh, pseudo_score_thresh)`` become
    ignore regions; the rest are dropped (background). Images without a confident box are left out.
    """

    def __init__(self, coco: CocoFile, config: CellBoxifyConfig):
        super().__init__(coco, config, with_masks=False)
        d = config.data
        score_of = {}
        for ann in coco.data["annotations"]:
            if not _is_number(ann.get("score")):
                raise CocoError(f"{coco.path}: pseudo-labels need a numeric 'score' on every box "
                                "(cellboxify predict --format boxes writes them)")
            score_of[ann["id"]] = float(ann["score"])
        self._split: list[tuple[np.ndarray, np.ndarray]] = []  # (cells, ignore regions), aligned with images
        kept = []
        for entry in self.images:
            scores = np.array([score_of[i] for i in entry.ann_ids], dtype=np.float32)
            cells = entry.boxes_xyxy[scores >= d.pseudo_score_thresh]
            unsure = entry.boxes_xyxy[(scores >= d.pseudo_ignore_thresh) & (scores < d.pseudo_score_thresh)]
            if len(cells):
                self._split.append((cells, unsure))
                kept.append(entry)
        self.images = kept

    def load(self, index: int) -> Sample:
        cells, unsure = self._split[index]
        name = self.images[index].file_name
        return Sample(self.image(index), cells.copy(), None, name, ignore_xyxy=unsure.copy())


def add_pseudo_labels(source, pseudo_json: str | Path, pseudo_images: str | Path, config: CellBoxifyConfig):
    """``source`` mixed with pseudo-labeled images (``data.pseudo_fraction`` of the samples come from them)."""
    from .dataset import MixedSource

    pseudo = PseudoLabelSource(load_coco(pseudo_json, pseudo_images), config)
    if len(pseudo) == 0:
        raise CocoError(f"{pseudo_json}: no image has a box scoring >= data.pseudo_score_thresh "
                        f"({config.data.pseudo_score_thresh})")
    return MixedSource(source, pseudo, config.data.pseudo_fraction)
