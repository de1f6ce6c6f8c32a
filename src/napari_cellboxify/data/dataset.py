"""Training data: any source of (image, boxes[, masks]) turned into deterministic, resumable batches.

A *source* has ``__len__`` and ``load(index) -> Sample`` (a normalised gray image and its boxes, masks only in
full-mask mode). ``StepBatches`` maps a global step number to a batch: which images and which augmentation
are a pure function of (seed, step, rank), so a resumed run sees exactly the batches an uninterrupted run would,
without storing sampler state, and each DDP rank sees different images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..config import CellBoxifyConfig
from .synthetic import synthetic_cells
from .transforms import augment, normalize_image, to_model_input


@dataclass
class Sample:
    image: np.ndarray  # (H, W) float32 in [0, 1], already normalised (CLAHE)
    boxes_xyxy: np.ndarray  # (N, 4) float32
    masks: np.ndarray | None = None  # (N, H, W) uint8, only for full-mask supervision
    name: str = ""


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


def to_target(boxes_xyxy: np.ndarray, masks: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    target = {
        "boxes": torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes_xyxy), dtype=torch.int64),
    }
    if masks is not None:
        target["masks"] = torch.as_tensor(np.ascontiguousarray(masks), dtype=torch.uint8)
    return target


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

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def sample_index(self, global_sample: int) -> int:
        n = len(self.source)
        epoch, position = divmod(global_sample, n)
        order = np.random.default_rng([self.config.train.seed, epoch]).permutation(n)
        return int(order[position])

    def __getitem__(self, i: int):
        step = self.start_step + i
        batch = []
        b = self.config.train.batch_size
        for j in range(b):
            g = (step * self.world_size + self.rank) * b + j
            sample = self.source.load(self.sample_index(g))
            rng = np.random.default_rng([self.config.train.seed, g, 1])
            image, boxes, masks = augment(sample.image, sample.boxes_xyxy, sample.masks, rng, self.config.data)
            batch.append((to_model_input(image), to_target(boxes, masks)))
        return batch


def collate_single(batch):
    """DataLoader collate for StepBatches (each item already is a batch)."""
    return batch[0]
