"""Synthetic phase-contrast-like cells for tests, sample data and benchmarks.

Touching rotated ellipses and irregular blobs of different sizes; each cell is a little darker than the
background, textured inside, with a bright halo around it and a dark rim (the look of phase contrast), on an
uneven background with noise. Returns the image and the exact instance labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..geometry import labels_to_boxes


@dataclass
class SyntheticImage:
    image: np.ndarray  # (H, W) uint8 (or uint16 with bit_depth=16)
    labels: np.ndarray  # (H, W) uint16, 0 = background, 1..N cells
    boxes_xyxy: np.ndarray  # (N, 4) float32, boxes of labels 1..N
    label_ids: np.ndarray  # (N,)

    def masks(self) -> np.ndarray:
        """(N, H, W) uint8 instance masks, in the order of ``boxes_xyxy``."""
        return (self.labels[None] == self.label_ids[:, None, None]).astype(np.uint8)


# Largest outline radius relative to ``radius`` for wobble 1: 1 + sum(1/k for k in 2..5).
_WOBBLE_REACH = 1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5


def _cell_mask(shape, centre, radius, elongation, angle, wobble, rng) -> tuple[tuple[slice, slice], np.ndarray]:
    """The cell's mask within its bounding window: (window slices into ``shape``, bool mask of the window).

    Computed in a window around the cell, not over the whole image: generating 2,000 cells on a 4096 px image
    went from O(cells x image) to O(cells x cell area) (benchmarks/bench_scaling.py builds such images).
    """
    h, w = shape
    # the harmonics are drawn before the window is known so that a seed gives the same cells as ever
    harmonics = [(rng.uniform(0, 1), rng.uniform(0, 2 * np.pi)) for _ in (2, 3, 4, 5)]
    reach = radius * elongation * (1 + wobble * _WOBBLE_REACH) + 2
    x0, x1 = max(0, int(centre[0] - reach)), min(w, int(np.ceil(centre[0] + reach)))
    y0, y1 = max(0, int(centre[1] - reach)), min(h, int(np.ceil(centre[1] + reach)))
    window = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    yy, xx = np.mgrid[y0:max(y0, y1), x0:max(x0, x1)].astype(np.float64) + 0.5
    dx, dy = xx - centre[0], yy - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # cell-aligned axes
    u = u / elongation
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = np.full_like(r, radius)
    for k, (amplitude, phase) in zip((2, 3, 4, 5), harmonics):  # irregular outline: low-frequency harmonics
        boundary = boundary + radius * wobble * amplitude * np.cos(k * theta + phase) / k
    return window, r < boundary


def synthetic_cells(
    shape: tuple[int, int] = (192, 192),
    n_cells: int = 14,
    radius_range: tuple[float, float] = (7.0, 16.0),
    seed: int | np.random.Generator | None = None,
    bit_depth: int = 8,
    max_overlap: float = 0.12,
) -> SyntheticImage:
    """Generate one image with up to ``n_cells`` cells (fewer if they do not fit)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, dtype=np.uint16)
    placed = 0
    for _ in range(n_cells * 20):
        if placed == n_cells:
            break
        radius = rng.uniform(*radius_range)
        irregular = rng.random() < 0.5
        window, mask = _cell_mask(
            shape,
            centre=(rng.uniform(0, w), rng.uniform(0, h)),
            radius=radius,
            elongation=rng.uniform(1.0, 2.0),
            angle=rng.uniform(0, np.pi),
            wobble=0.35 if irregular else 0.0,
            rng=rng,
        )
        area = mask.sum()
        if area < 20:
            continue
        local = labels[window]
        if (local[mask] > 0).sum() > max_overlap * area:  # touching is fine, heavy overlap is not
            continue
        placed += 1
        local[mask & (local == 0)] = placed
    labels = _relabel_connected(labels)
    image = _render(labels, rng)
    if bit_depth == 16:
        image = (image * 60000 + 500).astype(np.uint16)
    else:
        image = (image * 255).clip(0, 255).astype(np.uint8)
    ids, boxes = labels_to_boxes(labels)
    return SyntheticImage(image=image, labels=labels, boxes_xyxy=boxes, label_ids=ids)


def _relabel_connected(labels: np.ndarray) -> np.ndarray:
    """Keep the largest piece of each cell (overlaps may cut one in two) and number cells 1..N."""
    out = np.zeros_like(labels)
    n = 0
    for index, window in enumerate(ndimage.find_objects(labels)):  # each label's bounding box, not the image
        if window is None:
            continue
        pieces, count = ndimage.label(labels[window] == index + 1)
        if count > 1:
            sizes = ndimage.sum(np.ones_like(pieces), pieces, index=np.arange(1, count + 1))
            keep = pieces == (1 + int(np.argmax(sizes)))
        else:
            keep = pieces == 1
        if keep.sum() >= 20:
            n += 1
            out[window][keep] = n
    return out


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = labels.shape
    cells = labels > 0
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    background = 0.55 + 0.06 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.5, 1.5)))
    texture = ndimage.gaussian_filter(rng.normal(0, 1, labels.shape), 1.5)
    image = background - 0.18 * cells + 0.05 * texture * cells
    edges = ndimage.morphological_gradient(labels.astype(np.int32), size=3) > 0
    inner_rim = edges & cells
    halo = ndimage.binary_dilation(cells, iterations=3) & ~cells
    image = image - 0.12 * inner_rim + 0.22 * ndimage.gaussian_filter(halo.astype(float), 1.0)
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 0.025, labels.shape)
    return np.clip(image, 0, 1)
