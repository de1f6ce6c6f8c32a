"""Polygons -> pixel masks on the polygons' own device: mask pasting, and the window fill TTA averages.

Rasterising detections one by one on the host (``geometry.polygons_to_masks``, scikit-image) and copying an
(N, H, W) array back costs more than the polygon head itself on a GPU, and 2.3x this fill on a CPU
(benchmarks/bench_inference_stages.py). Here each polygon is filled only inside its own window (its bounding box,
or a box given by the caller), a chunk of polygons at a time, with the even-odd rule on pixel centres: the same
pixels as ``geometry.polygon_to_mask`` up to centres that fall exactly on an edge.

The fill is a scanline fill written as tensor operations: for each window row, where each edge crosses it (K x rows
x V numbers), a histogram of those crossings over the columns and a running sum along the row, whose parity is
the inside test. That is O(rows x (V + columns)) per polygon instead of testing every pixel against every edge.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

# Elements of one chunk's (polygons x window pixels) grid: bounds the temporary memory (~4 bytes each, a few
# buffers) whatever the number and size of the cells.
_CHUNK_ELEMENTS = 1 << 23


def polygons_to_masks_torch(polygons_xy: Tensor, shape: tuple[int, int]) -> Tensor:
    """(N, V, 2) polygons in (x, y) pixel coordinates -> (N, H, W) bool masks of the pixels whose centres lie
    inside, computed where ``polygons_xy`` lives."""
    h, w = int(shape[0]), int(shape[1])
    n = len(polygons_xy)
    device = polygons_xy.device
    masks = torch.zeros((n, h, w), dtype=torch.bool, device=device)
    if n == 0 or h == 0 or w == 0:
        return masks
    polys = polygons_xy.float()
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5): the window of a polygon is the pixels whose centres can lie
    # inside its bounding box, clipped to the image.
    lo = torch.floor(polys.amin(dim=1) - 0.5).clamp(min=0)
    hi = torch.ceil(polys.amax(dim=1) - 0.5)
    hi = torch.minimum(hi, torch.tensor([w - 1, h - 1], dtype=hi.dtype, device=device))
    lo = lo.long()
    size = (hi.long() - lo + 1).clamp(min=0)  # (N, 2): window width, height
    for idx, wb, hb in window_chunks(size, vertices=polys.shape[1]):
        inside = fill_windows(polys[idx][None], lo[idx], size[idx], wb, hb)[0]
        k, r, c = inside.nonzero(as_tuple=True)
        masks[idx[k], lo[idx[k], 1] + r, lo[idx[k], 0] + c] = True
    return masks


def window_chunks(size: Tensor, views: int = 1, vertices: int = 0) -> Iterator[tuple[Tensor, int, int]]:
    """Split N windows of ``size`` (N, 2: width, height) into chunks: yields (indices, padded width, height).

    Windows are sorted by area so that a chunk pads its windows to similar sizes (one large cell does not make
    every window in the image large). A chunk's ``views`` x windows x padded rows x the larger of the padded width
    and the polygons' ``vertices`` (``fill_windows`` holds one crossing per row and edge) stays within budget.
    """
    n = len(size)
    order = torch.argsort(size[:, 0] * size[:, 1])
    sizes = size[order].tolist()  # one device->host copy; the chunking below is plain Python on these ints
    start = 0
    while start < n:
        wb, hb = max(sizes[start][0], 1), max(sizes[start][1], 1)
        stop = start + 1
        while stop < n:  # windows only grow along `order`
            wn, hn = max(wb, sizes[stop][0]), max(hb, sizes[stop][1])
            if views * (stop + 1 - start) * hn * max(wn + 1, vertices) > _CHUNK_ELEMENTS:
                break
            wb, hb, stop = wn, hn, stop + 1
        yield order[start:stop], wb, hb
        start = stop


def fill_windows(polys: Tensor, lo: Tensor, size: Tensor, wb: int, hb: int) -> Tensor:
    """Even-odd fill of polygons in windows: (S, K, V, 2) polygons, K windows at ``lo`` (K, 2: column, row of the
    top-left pixel) of ``size`` (K, 2) padded to (hb, wb) -> (S, K, hb, wb) bool, False in the padding.

    S is a stack of outlines of the same K objects (TTA's views); every one is filled in its object's window.
    """
    device = polys.device
    polys = polys.float()
    # Centres of the window rows, (1, K, hb, 1), and the edges (S, K, 1, V).
    py = (lo[:, 1, None].float() + torch.arange(hb, device=device) + 0.5)[None, :, :, None]
    x0, y0 = polys[..., 0][:, :, None, :], polys[..., 1][:, :, None, :]
    nxt = torch.roll(polys, -1, dims=2)
    x1, y1 = nxt[..., 0][:, :, None, :], nxt[..., 1][:, :, None, :]
    straddles = (y0 > py) != (y1 > py)  # (S, K, hb, V): the edge crosses the row's centre line
    # Where the edge does not straddle the row, dy may be 0; the value is then unused.
    dy = torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
    x_cross = x0 + (py - y0) * (x1 - x0) / dy
    # A crossing at x toggles the columns whose centres lie left of it: the first ceil(x - 0.5) - column0 of them.
    toggled = torch.ceil(x_cross - 0.5 - lo[None, :, 0, None, None].float()).clamp(0, wb).long()
    hist = torch.zeros(polys.shape[:2] + (hb, wb + 1), dtype=torch.uint8, device=device)
    hist.scatter_add_(3, toggled, straddles.to(torch.uint8))
    # Column j is inside when an odd number of crossings lie right of its centre. A row has an even number of
    # crossings (a closed outline crosses a line as often down as up), so that parity is the parity of those at or
    # left of it: a running sum from the left, whose wrap-around in uint8 keeps the parity.
    inside = (hist[..., :wb].cumsum(-1, dtype=torch.uint8) & 1).bool()
    inside &= (torch.arange(wb, device=device) < size[:, 0, None])[None, :, None, :]
    inside &= (torch.arange(hb, device=device) < size[:, 1, None])[None, :, :, None]
    return inside
