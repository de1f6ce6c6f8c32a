"""Pairwise losses on the soft raster of a polygon, inside the crop of its ground-truth box.

Both take the raster logits (N, S, S) and the image cropped to the same (padded) box with RoIAlign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _neighbours(x: Tensor, kernel: int, dilation: int) -> Tensor:
    """(N, C, S, S) -> (N, C, K*K-1, S, S): each pixel's neighbours in a dilated K x K window, centre removed."""
    n, c, h, w = x.shape
    pad = dilation * (kernel // 2)
    cols = F.unfold(x, kernel_size=kernel, dilation=dilation, padding=pad)
    cols = cols.reshape(n, c, kernel * kernel, h, w)
    centre = (kernel * kernel) // 2
    return torch.cat([cols[:, :, :centre], cols[:, :, centre + 1 :]], dim=2)


def local_pairwise_loss(
    logits: Tensor,
    image_crops: Tensor,
    inside_box: Tensor,
    kernel: int = 3,
    dilation: int = 2,
    similarity_scale: float = 10.0,
    similarity_threshold: float = 0.7,
) -> Tensor:
    """Neighbours of similar intensity should share a label (BoxInst-style, on the polygon's soft raster).

    Args:
        logits: (N, S, S) occupancy logits of the predicted polygons in the crop frame.
        image_crops: (N, S, S) or (N, C, S, S) image intensities in [0, 1] over the same crops.
        inside_box: (N, S, S) bool, pixels that lie inside the (unpadded) GT box. A pair counts when either of
            its pixels lies inside: pairs that straddle the box edge are what make a filled box pay for cutting
            through uniform background (with inside-only pairs the filled box is the loss's minimum; measured
            on LIVECell by benchmarks/bench_loss_fit.py).
    Returns:
        mean over similar pairs of ``-log P(same label)``.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if image_crops.dim() == 3:
        image_crops = image_crops[:, None]
    log_fg = F.logsigmoid(logits)[:, None]
    log_bg = F.logsigmoid(-logits)[:, None]
    nb_fg = _neighbours(log_fg, kernel, dilation)[:, 0]
    nb_bg = _neighbours(log_bg, kernel, dilation)[:, 0]
    # log(P_i P_j + (1-P_i)(1-P_j)) computed in log space: stable where the raster is nearly hard.
    log_same = torch.logsumexp(torch.stack([log_fg + nb_fg, log_bg + nb_bg]), dim=0)  # (N, K, S, S)

    diff = (image_crops[:, :, None] - _neighbours(image_crops, kernel, dilation)).abs().mean(dim=1)
    similarity = torch.exp(-similarity_scale * diff)
    inside = inside_box[:, None].to(logits.dtype)
    nb_inside = _neighbours(inside, kernel, dilation)[:, 0]
    in_crop = _neighbours(torch.ones_like(inside), kernel, dilation)[:, 0]  # unfold's zero padding is no pixel
    either = torch.maximum(inside[:, 0][:, None], nb_inside)
    weight = (similarity >= similarity_threshold).to(logits.dtype) * either * in_crop
    return -(log_same * weight).sum() / weight.sum().clamp_min(1.0)


def local_contrast(gray: Tensor, window: int = 5, gain: float = 4.0) -> Tensor:
    """Local standard deviation of (B, 1, H, W) intensities in a ``window``-pixel square, times ``gain``, in [0, 1].

    Why: in phase contrast a cell and its background have the *same mean* intensity (LIVECell A172: 0.535 vs
    0.537 after CLAHE); what differs is texture (local std 0.12 in cells, 0.018 in background). Chan-Vese on raw
    intensity is flat there; on this channel it ranks the true contour below the ellipse and the box.
    """
    pad = window // 2
    mean = F.avg_pool2d(gray, window, 1, pad, count_include_pad=False)
    mean_sq = F.avg_pool2d(gray * gray, window, 1, pad, count_include_pad=False)
    return ((mean_sq - mean * mean).clamp_min(0).sqrt() * gain).clamp(0, 1)


def global_pairwise_loss(logits: Tensor, image_crops: Tensor, normalize: bool = True) -> Tensor:
    """Chan-Vese energy ``sum |I - u_in|^2 U + sum |I - u_out|^2 (1 - U)``, averaged over pixels and RoIs.

    ``u_in``/``u_out`` are the mean intensities inside/outside the soft polygon ``U``; the energy is lowest when
    the contour separates two homogeneous regions.

    With ``normalize`` each crop's energy is divided by the crop's variance, which makes it ``1 - eta^2`` (Otsu's
    separability: 0 for a perfect two-region split, 1 for a split that explains nothing) whatever the contrast.
    Why: the raw energy scales with the crop's contrast, which varies several-fold between cell types, and on
    LIVECell it was ~50x smaller than the local term, too weak to stop the local term from shrinking contours.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if image_crops.dim() == 3:
        image_crops = image_crops[:, None]
    u = torch.sigmoid(logits)[:, None]  # (N, 1, S, S)
    dims = (2, 3)
    u_in = (image_crops * u).sum(dims, keepdim=True) / u.sum(dims, keepdim=True).clamp_min(1e-6)
    u_out = (image_crops * (1 - u)).sum(dims, keepdim=True) / (1 - u).sum(dims, keepdim=True).clamp_min(1e-6)
    energy = ((image_crops - u_in) ** 2 * u + (image_crops - u_out) ** 2 * (1 - u)).mean(dim=(1, 2, 3))
    if normalize:
        # Flat crops (variance ~0) carry no signal; the floor keeps them from dominating the mean.
        energy = energy / image_crops.var(dim=(1, 2, 3), unbiased=False).clamp_min(1e-4)
    return energy.mean()
