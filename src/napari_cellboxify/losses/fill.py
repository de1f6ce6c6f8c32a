"""Box-fill prior: a polygon should cover at least half of its ground-truth box.

Why half: a convex shape that touches all four sides of its bounding box covers at least half of it (the
quadrilateral through the four touching points already does). Cells are close to convex, so a polygon that
fills less than half its box is a concave "star" or a shrunken blob -- a failure box-only training drifted into
on LIVECell (a box-only run from scratch with the first loss weights: median fill 0.41 while still touching the box's sides through a few
vertices). The unary term cannot see this (it only looks at the polygon's extreme vertices), so this term
penalises the missing fill, and only below the bound: above it, the pairwise terms alone decide the shape.

On by default (``loss.fill_weight`` 4): short fine-tunes do not need it, long box-only training does
(config.LossConfig says what was measured).
"""

from __future__ import annotations

import torch
from torch import Tensor


def polygon_areas(polygons_xy: Tensor) -> Tensor:
    """(N, V, 2) closed polygons -> (N,) areas (shoelace formula, orientation-free); differentiable."""
    x, y = polygons_xy[..., 0], polygons_xy[..., 1]
    cross = x * torch.roll(y, -1, dims=1) - torch.roll(x, -1, dims=1) * y
    return 0.5 * cross.sum(dim=1).abs()


def fill_prior_loss(polygons_xy: Tensor, gt_boxes_xyxy: Tensor, min_fill: float = 0.5) -> Tensor:
    """``mean(relu(min_fill - area(polygon) / area(box)))``: 0 for every polygon that fills >= ``min_fill``.

    Coordinates in pixels, boxes XYXY. The fill is measured against the GT box, so a polygon cannot satisfy the
    term by growing past its box (the unary term holds it inside).
    """
    if polygons_xy.shape[0] == 0:
        return polygons_xy.sum() * 0.0
    widths = (gt_boxes_xyxy[:, 2] - gt_boxes_xyxy[:, 0]).clamp(min=1e-3)
    heights = (gt_boxes_xyxy[:, 3] - gt_boxes_xyxy[:, 1]).clamp(min=1e-3)
    fill = polygon_areas(polygons_xy) / (widths * heights)
    return torch.relu(min_fill - fill).mean()
