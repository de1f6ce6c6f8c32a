"""Full-mask supervision of the same polygon head (the reference the box-only model is compared with)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_loss(logits: Tensor, gt_masks: Tensor) -> Tensor:
    """BCE + Dice between the polygon's soft raster (N, S, S logits) and GT masks (N, S, S) in [0, 1]."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    # The raster's logits grow with the squared distance to the contour (hundreds of units a few pixels away),
    # so unclamped BCE reached ~60 per pixel and its gradient swamped the detection losses under the shared
    # gradient clip (a 500-step GPU run with full masks: bbox AP 2.6 vs 12 box-only at 500 steps). Clamped, far pixels
    # cost at most ~15 and only the band near the contour steers the vertices, as in the box-only losses.
    bce = F.binary_cross_entropy_with_logits(logits.clamp(-15.0, 15.0), gt_masks)
    prob = torch.sigmoid(logits).flatten(1)
    target = gt_masks.flatten(1)
    dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return bce + dice.mean()
