"""Point-based unary loss: the box of the predicted polygon should be the ground-truth box."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import complete_box_iou_loss


def polygon_boxes(polygons_xy: Tensor) -> Tensor:
    """(N, V, 2) polygons -> (N, 4) XYXY boxes; differentiable (gradients reach the extreme vertices)."""
    mins = polygons_xy.min(dim=1).values
    maxs = polygons_xy.max(dim=1).values
    return torch.cat([mins, maxs], dim=1)


def unary_loss(polygons_xy: Tensor, gt_boxes_xyxy: Tensor) -> Tensor:
    """``mean(1 - CIoU(box(polygon), gt_box))``; 0 when every polygon touches all four sides of its box."""
    if polygons_xy.shape[0] == 0:
        return polygons_xy.sum() * 0.0
    return complete_box_iou_loss(polygon_boxes(polygons_xy), gt_boxes_xyxy, reduction="mean")
