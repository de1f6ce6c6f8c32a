"""Differentiable soft rasterisation of polygons (pure torch, any device).

A polygon is drawn on an ``S x S`` grid whose pixel ``(r, c)`` has its centre at ``(x, y) = (c + 0.5, r + 0.5)``;
the grid spans ``[0, S] x [0, S]``. This is the frame of ``torchvision.ops.roi_align(..., aligned=True)`` over a
box, so a polygon mapped into a box's frame lines up with the image crop of that box.

Occupancy is ``sigmoid(sign * d^2 / inv_smoothness)`` with ``d`` the distance (grid pixels) from the pixel centre
to the nearest polygon edge and ``sign`` +1 inside, -1 outside (BoxSnake's soft polygon). Small
``inv_smoothness`` tends to the hard rasterisation. Gradients reach the vertices through ``d``; the inside test
itself is a parity count and carries no gradient, as in the reference rasteriser.
"""

from __future__ import annotations

import torch
from torch import Tensor


def grid_centres(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(S*S, 2) pixel centres (x, y) in row-major order."""
    coords = torch.arange(size, device=device, dtype=dtype) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


# Elements of one (RoIs, pixels, edges) temporary when edges are taken in chunks on an accelerator: 2^25 floats
# (128 MB) each, about a dozen alive at once, so well under 2 GB at the GPU config's 1,024 RoIs x 3 stages.
EDGE_CHUNK_ELEMENTS = 1 << 25


def _nearest_edges(vertices: Tensor, size: int):
    """Forward pass without autograd: per pixel the squared distance to the nearest edge, that edge's index,
    the projection parameter ``t`` on it, and the inside/outside sign.

    Two formulations give the same numbers (on a CPU the first of equally near edges wins in both; a GPU's ``min``
    may pick another of them, an equally valid nearest edge for the gradient). On a CPU, one edge at a time:
    every temporary stays (N, S*S), cache-sized; 96 RoIs on a 64 grid take 113 ms against 208 for the chunked
    code one edge at a time and 599 for all 64 edges at once (2 cores). On an accelerator the loop's ~45 small
    operations per edge are the cost: 8,676 of the 12,984 operations of one training step (3 stages x 64 edges,
    bench_speed's image, before the batched raster), each a kernel launch: a large part of why a step on an H200 took
    3.3x stock Mask R-CNN's. There edges go in chunks as large as ``EDGE_CHUNK_ELEMENTS`` allows (the whole step:
    3,138 operations against stock's 2,149, bench_speed's row "raster as on a GPU").
    """
    if vertices.device.type == "cpu":
        return _nearest_edges_by_edge(vertices, size)
    return _nearest_edges_in_chunks(vertices, size)


def _nearest_edges_in_chunks(vertices: Tensor, size: int):
    """The accelerator's formulation: edges in chunks as large as ``EDGE_CHUNK_ELEMENTS`` allows."""
    chunk = max(1, EDGE_CHUNK_ELEMENTS // max(1, vertices.shape[0] * size * size))
    return _nearest_edges_chunked(vertices, size, chunk)


def _nearest_edges_by_edge(vertices: Tensor, size: int):
    n, v, _ = vertices.shape
    p = grid_centres(size, vertices.device, vertices.dtype)
    px, py = p[:, 0][None], p[:, 1][None]  # (1, P)
    best = torch.full((n, p.shape[0]), float("inf"), device=vertices.device, dtype=vertices.dtype)
    best_idx = torch.zeros(best.shape, dtype=torch.long, device=vertices.device)
    best_t = torch.zeros_like(best)
    inside = torch.zeros(best.shape, dtype=torch.bool, device=vertices.device)
    nxt = torch.roll(vertices, shifts=-1, dims=1)
    for k in range(v):
        ax, ay = vertices[:, k, 0:1], vertices[:, k, 1:2]  # (N, 1)
        abx, aby = nxt[:, k, 0:1] - ax, nxt[:, k, 1:2] - ay
        apx, apy = px - ax, py - ay
        t = ((apx * abx + apy * aby) / (abx * abx + aby * aby).clamp_min(1e-12)).clamp_(0.0, 1.0)
        dx, dy = apx - t * abx, apy - t * aby
        d2 = dx * dx + dy * dy
        closer = d2 < best
        best = torch.where(closer, d2, best)
        best_t = torch.where(closer, t, best_t)
        best_idx.masked_fill_(closer, k)
        # crossing-number parity of a ray towards +x: is the pixel centre inside?
        straddles = (ay > py) != ((ay + aby) > py)
        x_cross = ax + (py - ay) * abx / torch.where(straddles, aby, torch.ones_like(aby))
        inside ^= straddles & (px < x_cross)
    sign = inside.to(vertices.dtype) * 2 - 1
    return best, best_idx, best_t, sign


def _nearest_edges_chunked(vertices: Tensor, size: int, chunk: int):
    """The same as ``_nearest_edges_by_edge`` with ``chunk`` edges per step, temporaries (N, S*S, chunk)."""
    n, v, _ = vertices.shape
    p = grid_centres(size, vertices.device, vertices.dtype)
    px, py = p[:, 0][None, :, None], p[:, 1][None, :, None]  # (1, P, 1)
    best = torch.full((n, p.shape[0]), float("inf"), device=vertices.device, dtype=vertices.dtype)
    best_idx = torch.zeros(best.shape, dtype=torch.long, device=vertices.device)
    best_t = torch.zeros_like(best)
    crossings = torch.zeros(best.shape, dtype=torch.long, device=vertices.device)
    nxt = torch.roll(vertices, shifts=-1, dims=1)
    for k0 in range(0, v, chunk):
        a, b = vertices[:, None, k0 : k0 + chunk], nxt[:, None, k0 : k0 + chunk]  # (N, 1, C, 2)
        ax, ay = a[..., 0], a[..., 1]
        abx, aby = b[..., 0] - ax, b[..., 1] - ay
        apx, apy = px - ax, py - ay  # (N, P, C)
        t = ((apx * abx + apy * aby) / (abx * abx + aby * aby).clamp_min(1e-12)).clamp_(0.0, 1.0)
        dx, dy = apx - t * abx, apy - t * aby
        d2_min, arg = (dx * dx + dy * dy).min(dim=-1)  # the first of equal minima, as the loop's strict "<"
        closer = d2_min < best
        best = torch.where(closer, d2_min, best)
        best_t = torch.where(closer, t.gather(-1, arg[..., None])[..., 0], best_t)
        best_idx = torch.where(closer, arg + k0, best_idx)
        straddles = (ay > py) != ((ay + aby) > py)
        x_cross = ax + (py - ay) * abx / torch.where(straddles, aby, torch.ones_like(aby))
        crossings += (straddles & (px < x_cross)).sum(-1)
    sign = (crossings % 2).to(vertices.dtype) * 2 - 1
    return best, best_idx, best_t, sign


class _SignedSqDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices: Tensor, size: int) -> Tensor:
        d2, idx, t, sign = _nearest_edges(vertices.detach(), size)
        ctx.save_for_backward(vertices.detach(), idx, t, sign)
        ctx.size = size
        return sign * d2

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        vertices, idx, t, sign = ctx.saved_tensors
        n, v, _ = vertices.shape
        p = grid_centres(ctx.size, vertices.device, vertices.dtype)[None]  # (1, P, 2)
        nxt_idx = (idx + 1) % v
        a = torch.gather(vertices, 1, idx[..., None].expand(-1, -1, 2))  # (N, P, 2)
        b = torch.gather(vertices, 1, nxt_idx[..., None].expand(-1, -1, 2))
        r = p - a - t[..., None] * (b - a)  # pixel minus its nearest point on the outline
        # d(d^2)/da = -2(1-t) r, d(d^2)/db = -2 t r (t is optimal or clamped, so dt terms vanish)
        g = (grad_out * sign)[..., None] * (-2.0) * r
        grad = torch.zeros_like(vertices)
        grad.scatter_add_(1, idx[..., None].expand(-1, -1, 2), g * (1 - t)[..., None])
        grad.scatter_add_(1, nxt_idx[..., None].expand(-1, -1, 2), g * t[..., None])
        return grad, None


def polygon_signed_sq_distance(vertices: Tensor, size: int) -> Tensor:
    """Signed squared distance from every grid pixel centre to the polygon outline.

    Args:
        vertices: (N, V, 2) polygon vertices (x, y) in grid pixel units, in order (either orientation).
        size: grid side S.
    Returns:
        (N, S, S): +d^2 inside, -d^2 outside. Differentiable w.r.t. the vertices through d; the sign is not.
    """
    n = vertices.shape[0]
    return _SignedSqDistance.apply(vertices, size).reshape(n, size, size)


def soft_rasterize_logits(vertices: Tensor, size: int, inv_smoothness: float = 0.1) -> Tensor:
    """Occupancy logits (N, S, S) of polygons (N, V, 2) in grid pixel units; sigmoid gives the soft mask."""
    if vertices.shape[0] == 0:
        return vertices.new_zeros((0, size, size))
    return polygon_signed_sq_distance(vertices, size) / inv_smoothness


def soft_rasterize(vertices: Tensor, size: int, inv_smoothness: float = 0.1) -> Tensor:
    """Soft occupancy in [0, 1], shape (N, S, S)."""
    return torch.sigmoid(soft_rasterize_logits(vertices, size, inv_smoothness))


def polygons_to_box_frame(polygons_xy: Tensor, boxes_xyxy: Tensor, size: int, padding: float = 0.0) -> Tensor:
    """Map image-coordinate polygons (N, V, 2) into the S x S grid over each (padded) box (N, 4) XYXY."""
    x0 = boxes_xyxy[:, 0:1] - padding
    y0 = boxes_xyxy[:, 1:2] - padding
    w = (boxes_xyxy[:, 2:3] - boxes_xyxy[:, 0:1] + 2 * padding).clamp_min(1e-3)
    h = (boxes_xyxy[:, 3:4] - boxes_xyxy[:, 1:2] + 2 * padding).clamp_min(1e-3)
    x = (polygons_xy[..., 0] - x0) / w * size
    y = (polygons_xy[..., 1] - y0) / h * size
    return torch.stack([x, y], dim=-1)


def pad_boxes(boxes_xyxy: Tensor, padding: float) -> Tensor:
    return boxes_xyxy + boxes_xyxy.new_tensor([-padding, -padding, padding, padding])
