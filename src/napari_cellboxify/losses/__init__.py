"""Loss terms of CellBoxify (each a small pure function) and how they are combined."""

from __future__ import annotations

from torch import Tensor

from ..config import LossConfig
from .fill import fill_prior_loss
from .mask import mask_loss
from .pairwise import global_pairwise_loss, local_pairwise_loss
from .rasterize import soft_rasterize, soft_rasterize_logits
from .unary import unary_loss

__all__ = [
    "combine_losses",
    "fill_prior_loss",
    "global_pairwise_loss",
    "local_pairwise_loss",
    "mask_loss",
    "pairwise_warmup",
    "soft_rasterize",
    "soft_rasterize_logits",
    "unary_loss",
]

POLYGON_TERMS = ("loss_unary", "loss_local", "loss_global", "loss_fill", "loss_mask")


def pairwise_warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp 0 -> 1 of the pairwise weights over the first ``warmup_steps`` steps (BoxInst/BoxSnake)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def combine_losses(losses: dict[str, Tensor], config: LossConfig, step: int, warmup_steps: int | None = None) -> Tensor:
    """``L = det + alpha*L_unary + delta*L_fill + ramp*(beta*L_local + gamma*L_global)`` (+ L_mask with masks).

    Detection terms from torchvision (RPN, box head) enter with weight 1. ``warmup_steps`` overrides
    ``config.pairwise_warmup_steps`` (the Trainer passes 0 when fine-tuning).
    """
    ramp = pairwise_warmup(step, config.pairwise_warmup_steps if warmup_steps is None else warmup_steps)
    weights = {
        "loss_unary": config.unary_weight,
        "loss_fill": config.fill_weight,
        "loss_local": config.local_weight * ramp,
        "loss_global": config.global_weight * ramp,
        "loss_mask": 1.0,
    }
    return sum(value * weights.get(name, 1.0) for name, value in losses.items())
