"""Recipes: the configs that runs are made from, built on the schema in ``config.py``.

``fine_tune_config`` (what fine-tuning a trained file starts from), ``training_run_config`` (what a ``train`` run
uses: an explicit file, a resumed run's own config, the config inside ``--init`` weights, or the defaults) and
``small_cpu_config`` (the light ResNet-18 configuration of tests and demos). They sit above ``checkpoint``, which
they read, so that ``config`` imports nothing of the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import config_from_checkpoint, read_checkpoint
from .config import CellBoxifyConfig, DataConfig, apply_overrides


def fine_tune_config(trained: CellBoxifyConfig) -> CellBoxifyConfig:
    """The config for fine-tuning weights trained with ``trained``: its model and data sections (architecture
    and the preprocessing the weights expect), today's loss and training defaults (Adam at the paper's 1e-4).

    Loss weights are a training choice, not part of the weights: taking them from the defaults lets a fix to
    them (alpha 4, 2026-11-27) reach weights trained before it. The CLI's ``train --init`` and the panel's
    Fine-tune both start here.
    """
    stored = trained.to_dict()
    config = CellBoxifyConfig.from_dict({"model": stored["model"], "data": stored["data"]})
    # Which part of an image is annotated describes the new boxes, not the weights' training data.
    config.data.annotated_area = DataConfig.annotated_area
    config.validate()
    return config


def training_run_config(
    out_dir: str | Path,
    config_file: str | Path | None = None,
    *,
    resume: bool = False,
    init_weights: str | Path | None = None,
    supervision: str | None = None,
    steps: int | None = None,
    overrides: list[str] | None = None,
) -> CellBoxifyConfig:
    """The config a training run uses (the CLI's ``train`` and scripts/train_default_weights.py).

    An explicit ``config_file`` wins; otherwise a resumed run keeps the ``config.json`` it started with (so that
    resuming never silently changes the model it continues), else a fine-tuning run (``init_weights``) takes
    ``fine_tune_config`` of the config inside those weights, else the defaults. ``overrides``
    (``section.key=value``), then ``supervision`` and ``steps`` (command-line overrides) apply last.
    """
    run_config = Path(out_dir) / "config.json"
    if config_file:
        config = CellBoxifyConfig.load(config_file)
    elif resume and run_config.exists():
        config = CellBoxifyConfig.load(run_config)
    elif init_weights:
        config = fine_tune_config(config_from_checkpoint(read_checkpoint(init_weights), init_weights))
    else:
        config = CellBoxifyConfig()
    if overrides:
        config = apply_overrides(config, overrides)
    if supervision:
        config.loss.supervision = supervision
    if steps:
        config.train.steps = steps
    config.validate()
    return config


def small_cpu_config(**train_overrides: Any) -> CellBoxifyConfig:
    """A light configuration for tests, demos and CPU fine-tuning: ResNet-18 trunk, narrow FPN and heads."""
    config = CellBoxifyConfig()
    config.model.backbone = "resnet18"
    config.model.pretrained_backbone = False
    config.model.norm = "group"
    config.model.trainable_backbone_layers = 5
    config.model.fpn_channels = 64
    config.model.representation_size = 256
    config.model.head_channels = 64
    config.model.rpn_pre_nms_top_n_train = 600
    config.model.rpn_post_nms_top_n_train = 300
    config.model.rpn_pre_nms_top_n_test = 1000
    config.model.rpn_post_nms_top_n_test = 500
    config.model.box_batch_size_per_image = 128
    config.model.detections_per_img = 300
    config.loss.max_polygon_rois_per_image = 32
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return config
