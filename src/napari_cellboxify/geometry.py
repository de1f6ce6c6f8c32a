"""Polygon/box/mask conversions shared by the model, prediction, evaluation and export.

Coordinates: image pixel ``(row r, col c)`` covers ``[c, c+1) x [r, r+1)`` in ``(x, y)``, so its centre is at
``(c + 0.5, r + 0.5)`` and a box ``[x1, y1, x2, y2]`` that covers pixels 0..w-1 is ``[0, 0, w, h]`` (torchvision's
and COCO's convention).
"""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon as draw_polygon


def polygon_to_mask(polygon_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(V, 2) polygon in image coordinates -> (H, W) bool mask of the pixels whose centres lie inside."""
    mask = np.zeros(shape, dtype=bool)
    rr, cc = draw_polygon(polygon_xy[:, 1] - 0.5, polygon_xy[:, 0] - 0.5, shape=shape)
    mask[rr, cc] = True
    return mask


def polygon_window(polygon_xy: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, mask)``: ``polygon_to_mask(polygon_xy, shape)`` cut to the rectangle around the polygon, made
    without the full-size mask (the same pixels: the offset is subtracted exactly, in float64)."""
    h, w = shape
    poly = np.asarray(polygon_xy, dtype=np.float64)
    x0, y0 = (int(min(lim, max(0, np.floor(v)))) for v, lim in zip(poly.min(axis=0), (w, h)))
    x1, y1 = (int(min(lim, max(0, np.ceil(v) + 1))) for v, lim in zip(poly.max(axis=0), (w, h)))
    x1, y1 = max(x1, x0), max(y1, y0)
    return y0, x0, polygon_to_mask(poly - np.array([x0, y0]), (y1 - y0, x1 - x0))


def resample_polygon(flat_xy, num_vertices: int) -> np.ndarray:
    """A COCO polygon ``[x0, y0, x1, y1, ...]`` -> (num_vertices, 2) points evenly spaced along its outline."""
    points = np.asarray(flat_xy, dtype=np.float64).reshape(-1, 2)
    closed = np.vstack([points, points[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    t = np.linspace(0.0, arc[-1], num_vertices, endpoint=False)
    return np.stack([np.interp(t, arc, closed[:, 0]), np.interp(t, arc, closed[:, 1])], axis=1)


def mask_outline(mask: np.ndarray, num_vertices: int, origin_xy=(0.0, 0.0)) -> np.ndarray | None:
    """The outer outline (longest 0.5 iso-contour) of a mask or soft mask, resampled to (num_vertices, 2) (x, y)
    points in the pixel-edge frame (pixel (r, c) has its centre at (c + .5, r + .5)), shifted by ``origin_xy``
    (where the mask's top-left pixel lies); None when nothing reaches 0.5."""
    from skimage.measure import find_contours

    padded = np.pad(mask, 1)  # one pixel of zeros around it closes every contour
    contours = find_contours(padded.astype(np.float32), 0.5) if padded.max() >= 0.5 else []
    if not contours:
        return None
    rc = max(contours, key=len)
    xy = np.stack([rc[:, 1] - 1 + 0.5 + origin_xy[0], rc[:, 0] - 1 + 0.5 + origin_xy[1]], axis=1)
    return resample_polygon(xy.reshape(-1), num_vertices)


def polygon_pixels(polygon_xy: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels inside a polygon, clipped to ``shape``."""
    return draw_polygon(polygon_xy[:, 1] - 0.5, polygon_xy[:, 0] - 0.5, shape=shape)


def polygons_to_masks(polygons_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, V, 2) -> (N, H, W) bool."""
    masks = np.zeros((len(polygons_xy),) + tuple(shape), dtype=bool)
    for i, poly in enumerate(polygons_xy):
        rr, cc = polygon_pixels(poly, shape)
        masks[i, rr, cc] = True
    return masks


def polygons_to_labels(
    polygons_xy: np.ndarray, shape: tuple[int, int], scores: np.ndarray | None = None, ids: np.ndarray | None = None
) -> np.ndarray:
    """Paint polygons into a label image (0 = background). Where they overlap the higher score wins.

    ``ids`` give each polygon its label (default 1..N in input order), so labels stay stable across runs.
    The dtype is uint16 when the labels fit, else uint32.
    """
    n = len(polygons_xy)
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
    dtype = np.uint16 if (ids.max(initial=0) < 2**16) else np.uint32
    labels = np.zeros(shape, dtype=dtype)
    order = np.arange(n) if scores is None else np.argsort(np.asarray(scores), kind="stable")
    for i in order:  # ascending score: the best-scoring cell is painted last and keeps contested pixels
        rr, cc = polygon_pixels(polygons_xy[i], shape)
        labels[rr, cc] = ids[i]
    return labels


def box_inscribed_ellipse(box_xyxy: np.ndarray, num_vertices: int = 64) -> np.ndarray:
    """(V, 2) ellipse inscribed in a box: the ellipse baseline of the oracle-box evaluation."""
    x1, y1, x2, y2 = box_xyxy
    theta = np.linspace(0, 2 * np.pi, num_vertices, endpoint=False)
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return np.stack([cx + rx * np.cos(theta), cy + ry * np.sin(theta)], axis=1)


def box_polygon(box_xyxy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box_xyxy
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=float)


def labels_to_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image -> (ids (K,), boxes (K, 4) XYXY covering each label's pixels)."""
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids != 0]
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    slices = ndimage.find_objects(labels.astype(np.int64)) if len(ids) else []
    for k, label in enumerate(ids):
        sl = slices[int(label) - 1]
        boxes[k] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return ids, boxes


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
