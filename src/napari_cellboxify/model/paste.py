"""Polygons -> full-resolution instance masks on the polygons' own device (the GPU path of mask pasting).

On a GPU, rasterising detections one by one on the host (``geometry.polygons_to_masks``, scikit-image) and copying
an (N, H, W) array back costs more than the polygon head itself. Here each polygon is tested only inside its own
bounding box, a chunk of polygons at a time, with the even-odd crossing rule on pixel centres: the same pixels as
``geometry.polygon_to_mask`` up to centres that fall exactly on an edge.
"""

from __future__ import annotations

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
    size = (hi - lo + 1).clamp(min=0).long()  # (N, 2): window width, height
    # Sort by window area so that a chunk pads its windows to similar sizes (one large cell does not make every
    # window in the image large).
    order = torch.argsort(size[:, 0] * size[:, 1])
    sizes = size[order].tolist()  # one device->host copy; the chunking below is plain Python on these ints
    start = 0
    while start < n:
        wb, hb = max(sizes[start][0], 1), max(sizes[start][1], 1)
        stop = start + 1
        # Grow the chunk while the padded grid stays within budget; windows only grow along `order`.
        while stop < n:
            wn, hn = max(wb, sizes[stop][0]), max(hb, sizes[stop][1])
            if (stop + 1 - start) * wn * hn > _CHUNK_ELEMENTS:
                break
            wb, hb, stop = wn, hn, stop + 1
        idx = order[start:stop]
        _fill_chunk(masks, idx, polys[idx], lo[idx].long(), size[idx], wb, hb)
        start = stop
    return masks


def _fill_chunk(masks: Tensor, idx: Tensor, polys: Tensor, lo: Tensor, size: Tensor, wb: int, hb: int) -> None:
    device = polys.device
    cols = lo[:, 0, None] + torch.arange(wb, device=device)  # (K, wb) pixel columns
    rows = lo[:, 1, None] + torch.arange(hb, device=device)  # (K, hb) pixel rows
    px = (cols.float() + 0.5)[:, None, :]  # (K, 1, wb) centres
    py = (rows.float() + 0.5)[:, :, None]  # (K, hb, 1)
    inside = torch.zeros((len(idx), hb, wb), dtype=torch.bool, device=device)
    nxt = torch.roll(polys, -1, dims=1)
    # Even-odd rule: a horizontal ray from the centre to +x crosses the outline an odd number of times inside.
    for v in range(polys.shape[1]):
        x0, y0 = polys[:, v, 0, None, None], polys[:, v, 1, None, None]
        x1, y1 = nxt[:, v, 0, None, None], nxt[:, v, 1, None, None]
        straddles = (y0 > py) != (y1 > py)  # (K, hb, 1)
        # Where the edge does not straddle the row, dy may be 0; the value is then unused.
        dy = torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
        x_cross = x0 + (py - y0) * (x1 - x0) / dy  # (K, hb, 1)
        inside ^= straddles & (px < x_cross)
    # Only the window's own pixels (a chunk pads smaller windows to the largest).
    inside &= (torch.arange(wb, device=device) < size[:, 0, None])[:, None, :]
    inside &= (torch.arange(hb, device=device) < size[:, 1, None])[:, :, None]
    k, r, c = inside.nonzero(as_tuple=True)
    masks[idx[k], rows[k, r], cols[k, c]] = True
