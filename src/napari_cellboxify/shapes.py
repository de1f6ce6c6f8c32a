"""napari Shapes data <-> boxes, without Qt (so it is tested like the rest of the core).

napari puts pixel centres at integer data coordinates (pixel ``c`` spans ``[c-0.5, c+0.5]``); the core's frame
puts them at ``c + 0.5`` (see ``geometry``). A rectangle drawn tightly around pixels ``a..b`` thus becomes the
box ``[a, b+1]``: ``x = col + 0.5``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BoxesFromShapes:
    """Boxes per plane (key: the leading indices of the shape, () for 2-D images) and what was fixed."""

    boxes: dict[tuple, np.ndarray] = field(default_factory=dict)  # plane -> (N, 4) XYXY
    shape_index: dict[tuple, np.ndarray] = field(default_factory=dict)  # plane -> (N,) index into layer.data
    notices: list[str] = field(default_factory=list)


def shapes_to_boxes(
    data: list[np.ndarray], shape_types: list[str], image_shape: tuple[int, ...], min_size: float = 1.0
) -> BoxesFromShapes:
    """Turn a Shapes layer's data into axis-aligned boxes, clipped to the image, grouped by plane.

    Args:
        data: the layer's ``data``: one (V, D) vertex array per shape, in data coordinates (row, col last).
        shape_types: the layer's ``shape_type`` list.
        image_shape: the spatial shape of the image, leading (stack) dims included, no RGB channel axis.
    Rotated rectangles and other shapes become their bounding boxes (with a notice); boxes partly outside are
    clipped; boxes wholly outside, empty, or under ``min_size`` px are skipped (with a notice).
    """
    out = BoxesFromShapes()
    per_plane: dict[tuple, list] = defaultdict(list)
    per_index: dict[tuple, list] = defaultdict(list)
    h, w = image_shape[-2:]
    n_lead = len(image_shape) - 2
    counts = defaultdict(int)
    for i, (vertices, kind) in enumerate(zip(data, shape_types)):
        vertices = np.asarray(vertices, dtype=float)
        if vertices.ndim != 2 or vertices.shape[0] == 0 or not np.isfinite(vertices).all():
            counts["invalid"] += 1
            continue
        if kind != "rectangle":
            counts[f"{kind} shape(s) replaced by their bounding box"] += 1
        elif vertices.shape[0] == 4 and not _axis_aligned(vertices[:, -2:]):
            counts["rotated rectangle(s) replaced by their bounding box"] += 1
        lead = vertices[:, :-2]
        if n_lead:
            if lead.shape[1] < n_lead:
                counts["drawn on no particular slice (skipped)"] += 1
                continue
            plane_idx = np.round(lead[:, -n_lead:]).astype(int)
            if not (plane_idx == plane_idx[0]).all():
                counts["spanning several slices (skipped)"] += 1
                continue
            plane = tuple(int(v) for v in plane_idx[0])
            if any(p < 0 or p >= s for p, s in zip(plane, image_shape[:-2])):
                counts["on a slice outside the image (skipped)"] += 1
                continue
        else:
            plane = ()
        rows, cols = vertices[:, -2], vertices[:, -1]
        box = np.array([cols.min() + 0.5, rows.min() + 0.5, cols.max() + 0.5, rows.max() + 0.5])
        clipped = np.clip(box, 0, [w, h, w, h])
        if (clipped[2] - clipped[0]) < min_size or (clipped[3] - clipped[1]) < min_size:
            if (box[2] - box[0]) < min_size or (box[3] - box[1]) < min_size:
                counts["empty or zero-area (skipped)"] += 1
            else:
                counts["outside the image (skipped)"] += 1
            continue
        if not np.allclose(clipped, box):
            counts["partly outside the image (clipped)"] += 1
        per_plane[plane].append(clipped)
        per_index[plane].append(i)
    for plane, boxes in per_plane.items():
        out.boxes[plane] = np.asarray(boxes, dtype=np.float32)
        out.shape_index[plane] = np.asarray(per_index[plane], dtype=int)
    out.notices = [f"{n} box(es) {reason}" for reason, n in counts.items()]
    return out


def between_layers(vertices: list[np.ndarray], scale, translate, to_scale, to_translate) -> list[np.ndarray]:
    """Vertices in one napari layer's data coordinates -> another's, through the world both sit in.

    napari places each layer by its ``scale`` (e.g. µm per pixel) and ``translate``: boxes drawn over a calibrated
    image are in the Shapes layer's own units, not the image's pixels, unless both layers share them. Layers align
    by their trailing axes, so only those are mapped; a leading axis one layer lacks is left as it is.
    """
    out = []
    for v in vertices:
        v = np.asarray(v, dtype=float)
        k = min(v.shape[1], len(scale), len(to_scale))
        world = v[:, -k:] * np.asarray(scale, float)[-k:] + np.asarray(translate, float)[-k:]
        mapped = v.copy()
        mapped[:, -k:] = (world - np.asarray(to_translate, float)[-k:]) / np.asarray(to_scale, float)[-k:]
        out.append(mapped)
    return out


def _axis_aligned(corners: np.ndarray) -> bool:
    edges = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    return bool(np.all(np.isclose(edges[:, 0], 0, atol=1e-6) | np.isclose(edges[:, 1], 0, atol=1e-6)))


def boxes_to_rectangles(boxes_xyxy: np.ndarray, plane: tuple = ()) -> list[np.ndarray]:
    """Boxes -> napari rectangle vertex arrays (4, D) (plane indices first), inverse of ``shapes_to_boxes``."""
    rects = []
    for x1, y1, x2, y2 in np.asarray(boxes_xyxy, dtype=float).reshape(-1, 4):
        corners = np.array([[y1, x1], [y1, x2], [y2, x2], [y2, x1]]) - 0.5
        if plane:
            corners = np.hstack([np.tile(np.asarray(plane, dtype=float), (4, 1)), corners])
        rects.append(corners)
    return rects
