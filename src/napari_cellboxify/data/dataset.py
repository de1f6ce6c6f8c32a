"""Training data: any source of (image, boxes[, masks]) turned into deterministic, resumable batches.

A *source* has ``__len__`` and ``load(index) -> Sample`` (a normalised gray image and its boxes, masks only in
full-mask mode). ``StepBatches`` maps a global step number to a batch: which images and which augmentation
are a pure function of (seed, step, rank), so a resumed run sees exactly the batches an uninterrupted run would,
without storing sampler state, and each DDP rank sees different images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..config import CellBoxifyConfig
from .synthetic import synthetic_cells
from .transforms import augment_with_ignore, normalize_image, to_model_input


@dataclass
class Sample:
    image: np.ndarray  # (H, W) float32 in [0, 1], already normalised (CLAHE)
    boxes_xyxy: np.ndarray  # (N, 4) float32
    masks: np.ndarray | None = None  # (N, H, W) uint8, only for full-mask supervision
    name: str = ""
    # (M, 4) XYXY regions that are neither cell nor background: uncertain pseudo-labels. Anchors and proposals
    # overlapping them are left out of the detector's sampling instead of being taught "background".
    ignore_xyxy: np.ndarray | None = None


class CrowdedCropWarning(UserWarning):
    """A training crop held more boxes than ``data.max_boxes_per_crop``; a random subset trained."""


class Source(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...


class SyntheticSource:
    """An endless supply of synthetic images (``length`` distinct seeds)."""

    def __init__(self, config: CellBoxifyConfig, length: int = 100_000, seed: int = 0, with_masks: bool = False,
                 shape: tuple[int, int] = (192, 192), n_cells: int = 14):
        self.config, self.length, self.seed, self.with_masks = config, length, seed, with_masks
        self.shape, self.n_cells = shape, n_cells

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> Sample:
        syn = synthetic_cells(self.shape, self.n_cells, seed=self.seed * 1_000_003 + index)
        image = normalize_image(syn.image, self.config.data.clahe, self.config.data.clahe_clip_limit)
        return Sample(image, syn.boxes_xyxy, syn.masks() if self.with_masks else None, f"synthetic-{index}")


def to_target(boxes_xyxy: np.ndarray, masks: np.ndarray | None = None,
              ignore_xyxy: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    target = {
        "boxes": torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes_xyxy), dtype=torch.int64),
    }
    if masks is not None:
        target["masks"] = torch.as_tensor(np.ascontiguousarray(masks), dtype=torch.uint8)
    if ignore_xyxy is not None and len(ignore_xyxy):
        target["ignore_boxes"] = torch.as_tensor(ignore_xyxy, dtype=torch.float32).reshape(-1, 4)
    return target


class MixedSource:
    """Two sources drawn at a fixed ratio: ``fraction`` of the samples come from ``extra`` (e.g. pseudo-labeled
    images), the rest from ``main``. Implemented as repeats of each source's images, so ``StepBatches`` keeps
    its epoch-permutation sampling (every image of a source is seen equally often)."""

    def __init__(self, main: Source, extra: Source, fraction: float):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction of extra samples must be in (0, 1), got {fraction}")
        n_main, n_extra = len(main), len(extra)
        if n_main == 0 or n_extra == 0:
            raise ValueError("both sources need at least one image")
        # repeats r_m, r_e with r_e*n_extra / (r_m*n_main + r_e*n_extra) close to fraction (smallest integers)
        want = fraction / (1.0 - fraction) * n_main / n_extra  # r_e / r_m
        self.repeat_main, self.repeat_extra = (1, max(1, round(want))) if want >= 1 else (max(1, round(1 / want)), 1)
        self.main, self.extra = main, extra

    @property
    def extra_fraction(self) -> float:
        e = self.repeat_extra * len(self.extra)
        return e / (e + self.repeat_main * len(self.main))

    def __len__(self) -> int:
        return self.repeat_main * len(self.main) + self.repeat_extra * len(self.extra)

    def load(self, index: int) -> Sample:
        n_main = self.repeat_main * len(self.main)
        if index < n_main:
            return self.main.load(index % len(self.main))
        return self.extra.load((index - n_main) % len(self.extra))


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the batch of global step ``start_step + i`` for this rank: a list of (image, target)."""

    def __init__(self, source: Source, config: CellBoxifyConfig, start_step: int = 0, total_steps: int | None = None,
                 rank: int = 0, world_size: int = 1):
        if len(source) == 0:
            raise ValueError("the training data has no images with boxes")
        self.source, self.config = source, config
        self.start_step = start_step
        self.total_steps = config.train.steps if total_steps is None else total_steps
        self.rank, self.world_size = rank, world_size
        self.warned_crowded = False

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def sample_index(self, global_sample: int) -> int:
        n = len(self.source)
        epoch, position = divmod(global_sample, n)
        order = np.random.default_rng([self.config.train.seed, epoch]).permutation(n)
        return int(order[position])

    def _cap(self, boxes: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator, name: str):
        """At most ``data.max_boxes_per_crop`` boxes (a random subset), so a step's memory stays bounded."""
        cap = self.config.data.max_boxes_per_crop
        if len(boxes) <= cap:
            return boxes, masks
        if not self.warned_crowded:
            warnings.warn(f"a training crop of {name or 'an image'} holds {len(boxes):,} boxes; {cap:,} of them, "
                          "drawn at random, train each such step (data.max_boxes_per_crop)", CrowdedCropWarning,
                          stacklevel=2)
            self.warned_crowded = True
        keep = np.sort(rng.choice(len(boxes), cap, replace=False))
        return boxes[keep], None if masks is None else masks[keep]

    def __getitem__(self, i: int):
        step = self.start_step + i
        batch = []
        b = self.config.train.batch_size
        for j in range(b):
            g = (step * self.world_size + self.rank) * b + j
            sample = self.source.load(self.sample_index(g))
            rng = np.random.default_rng([self.config.train.seed, g, 1])
            image, boxes, masks, ignore = augment_with_ignore(
                sample.image, sample.boxes_xyxy, sample.ignore_xyxy, sample.masks, rng, self.config.data
            )
            boxes, masks = self._cap(boxes, masks, rng, sample.name)
            batch.append((to_model_input(image), to_target(boxes, masks, ignore)))
        return batch


def collate_single(batch):
    """DataLoader collate for StepBatches (each item already is a batch)."""
    return batch[0]
