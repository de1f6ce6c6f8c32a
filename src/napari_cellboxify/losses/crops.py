"""Clipping: the image seen by the pairwise losses, cropped and resized to each GT box with RoIAlign."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from ..config import LossConfig
from .pairwise import local_contrast
from .rasterize import pad_boxes


def inside_gt_box(gts: Tensor, size: int, pad: float) -> Tensor:
    """(N, S, S) bool: crop pixels whose centres lie inside the unpadded GT box (crop = box padded by ``pad``)."""
    w = gts[:, 2] - gts[:, 0] + 2 * pad
    h = gts[:, 3] - gts[:, 1] + 2 * pad
    centres = (torch.arange(size, device=gts.device, dtype=gts.dtype) + 0.5) / size  # fraction of the crop
    x = centres[None, :] * w[:, None]
    y = centres[None, :] * h[:, None]
    in_x = (x >= pad) & (x <= w[:, None] - pad)
    in_y = (y >= pad) & (y <= h[:, None] - pad)
    return in_y[:, :, None] & in_x[:, None, :]


def gt_box_crops(gray: Tensor, image_index: Tensor, gts: Tensor, cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """Crops for the pairwise losses.

    Args:
        gray: (B, 1, H, W) intensities in [0, 1].
        image_index: (N,) which image each GT box lies in.
        gts: (N, 4) XYXY GT boxes in the images' pixel frame.
    Returns:
        crops (N, 2, S, S): channel 0 intensity (local term), channel 1 the Chan-Vese channel (``global_channel``);
        inside (N, S, S) bool, the unpadded GT box within the crop.
    """
    size, pad = cfg.raster_size, cfg.raster_padding
    region = gray if cfg.global_channel == "intensity" else local_contrast(gray, cfg.contrast_window)
    rois = torch.cat([image_index[:, None].to(gts.dtype), pad_boxes(gts, pad)], dim=1)
    crops = roi_align(torch.cat([gray, region], dim=1), rois, output_size=size, spatial_scale=1.0,
                      sampling_ratio=2, aligned=True)
    return crops, inside_gt_box(gts, size, pad)
