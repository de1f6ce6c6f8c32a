"""An exponential moving average (EMA) of the weights during training (``train.ema_decay``).

Why: training here runs with 2 images per step (a CPU, or a biologist's few boxed images), so the weights of the
last step carry that step's noise; an average over the last few hundred steps is a smoother model at no training
cost. torch's ``AveragedModel`` keeps the copy; we only choose the decay.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ModelEmaV2 and
detectron2's EMA hooks do) so that a short fine-tuning run is not held back by the weights it started from:
after 100 steps the average spans about the last 10 steps, after 1,000 about the last 100, and it reaches
``decay`` (0.998: about the last 500 steps) after ~4,500.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates + 1`` (``updates`` averaged so far)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model``; call ``.update_parameters(model)`` after every optimiser step.

    Buffers (image mean/std, the start contour, frozen batch-norm statistics) are copied, not averaged: they
    are constants, or statistics that an average of weights does not match.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")

    def lerp_towards_current(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1.0 - warmed_decay(decay, int(updates))
        for a, c in zip(averaged, current):
            a.lerp_(c.to(a.dtype), weight)

    return AveragedModel(model, multi_avg_fn=lerp_towards_current, use_buffers=False)
