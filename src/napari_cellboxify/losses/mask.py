"""Full-mask supervision of the same polygon head (the reference the box-only model is compared with)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_loss(logits: Tensor, gt_masks: Tensor) -> Tensor:
    """BCE + Dice between the polygon's soft raster (N, S, S logits) and GT masks (N, S, S) in [0, 1]."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits, gt_masks)
    prob = torch.sigmoid(logits).flatten(1)
    target = gt_masks.flatten(1)
    dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return bce + dice.mean()
