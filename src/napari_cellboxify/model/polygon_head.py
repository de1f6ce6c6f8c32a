"""The polygon head: contours start inside each box and are refined from RoI features.

Vertices live in *box-normalised* coordinates: (0, 0) is a box's top-left corner and (1, 1) its bottom-right.
The head sees RoIAlign features of the same box, so a vertex at ``v`` reads the feature map at ``v``. Each stage
samples features at the current vertices, mixes them along the contour with circular 1-D convolutions (a
Deep-Snake-style stage), and predicts an offset per vertex.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def initial_contour(num_vertices: int, kind: str = "ellipse", device=None, dtype=torch.float32) -> Tensor:
    """(V, 2) box-normalised start contour: the inscribed ellipse, or points evenly around the box outline."""
    k = torch.arange(num_vertices, device=device, dtype=dtype)
    if kind == "ellipse":
        theta = 2 * math.pi * k / num_vertices
        return torch.stack([0.5 + 0.5 * torch.cos(theta), 0.5 + 0.5 * torch.sin(theta)], dim=1)
    if kind == "box":
        s = 4.0 * k / num_vertices  # perimeter parameter, one unit per side
        x = torch.where(s < 1, s, torch.where(s < 2, torch.ones_like(s), torch.where(s < 3, 3 - s, torch.zeros_like(s))))
        y = torch.where(s < 1, torch.zeros_like(s), torch.where(s < 2, s - 1, torch.where(s < 3, torch.ones_like(s), 4 - s)))
        return torch.stack([x, y], dim=1)
    raise ValueError(f"unknown contour init '{kind}' (ellipse or box)")


def superellipse_contour(num_vertices: int, exponent: float) -> Tensor:
    """(V, 2) box-normalised contour ``|x|^p + |y|^p = 1`` mapped to [0, 1]^2, touching the four box edges.

    ``p = 2`` is the inscribed ellipse; ``p < 1`` a concave star, the shape a contour takes when it shrinks
    while keeping its box (the probe of the loss-ranking test and benchmark).
    """
    t = torch.arange(num_vertices) * (2 * math.pi / num_vertices)
    c, s = torch.cos(t), torch.sin(t)
    power = 2 / exponent
    return torch.stack([c.sign() * c.abs() ** power, s.sign() * s.abs() ** power], -1) * 0.5 + 0.5


def box_to_image(vertices_norm: Tensor, boxes_xyxy: Tensor) -> Tensor:
    """Box-normalised (N, V, 2) -> image coordinates, for boxes (N, 4) XYXY."""
    origin = boxes_xyxy[:, None, :2]
    size = (boxes_xyxy[:, None, 2:] - boxes_xyxy[:, None, :2]).clamp_min(1e-3)
    return origin + vertices_norm * size


def circular_pad(x: Tensor, pad: int) -> Tensor:
    """(N, C, V) -> (N, C, V + 2 pad), the contour's last ``pad`` vertices before its first and its first after."""
    return torch.cat([x[..., x.shape[-1] - pad :], x, x[..., :pad]], dim=-1)


class SnakeStage(nn.Module):
    """One refinement step: features sampled at the vertices -> circular convs -> per-vertex offset."""

    def __init__(self, feature_channels: int, hidden: int = 128, kernel: int = 9, layers: int = 3):
        super().__init__()
        self.inp = nn.Conv1d(feature_channels + 2, hidden, 1)
        # Circular convolutions, padded by hand in forward: Conv1d's padding_mode="circular" dispatches about a
        # dozen copies per call (each a kernel launch on a GPU), one cat does the same. The weights are the same.
        self.pad = kernel // 2
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel) for _ in range(layers))
        self.out = nn.Conv1d(hidden, 2, 1)
        # Zero offsets at start: an untrained head returns the initial contour, a sane prior for cells.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: Tensor, vertices: Tensor) -> Tensor:
        # grid_sample's [-1, 1] spans the feature map's outer edges (align_corners=False) = box corners.
        grid = (vertices * 2 - 1)[:, :, None, :]  # (N, V, 1, 2)
        sampled = F.grid_sample(features, grid, align_corners=False, padding_mode="border")[..., 0]  # (N, C, V)
        centred = (vertices - vertices.mean(dim=1, keepdim=True)).transpose(1, 2)  # shape, not position
        x = F.relu(self.inp(torch.cat([sampled, centred], dim=1)))
        for conv in self.convs:
            x = F.relu(x + conv(circular_pad(x, self.pad)))
        return vertices + 0.1 * self.out(x).transpose(1, 2)


class PolygonHead(nn.Module):
    """RoI features (N, C, R, R) -> refined polygons, one (N, V, 2) box-normalised tensor per stage and pass.

    With ``passes`` > 1 the stages run again, at inference, from the last stage's polygons (same weights): each
    stage reads the features at its input's vertices, so a later pass corrects what the first left. Training
    always supervises one pass: a head trained with two cost 2.6x per step and did no better than a one-pass head
    run twice at inference (benchmarks/RESULTS.md, "Refinement passes at inference").
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 128,
        num_vertices: int = 64,
        stages: int = 3,
        init: str = "ellipse",
        passes: int = 1,
    ):
        super().__init__()
        self.passes = passes
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(SnakeStage(channels, hidden=channels) for _ in range(stages))
        self.register_buffer("init_contour", initial_contour(num_vertices, init), persistent=False)

    def forward(self, roi_features: Tensor) -> list[Tensor]:
        features = self.trunk(roi_features)
        vertices = self.init_contour[None].expand(roi_features.shape[0], -1, -1).to(features.dtype)
        outputs = []
        for _ in range(1 if self.training else self.passes):
            for stage in self.stages:
                vertices = stage(features, vertices)
                outputs.append(vertices)
        return outputs
