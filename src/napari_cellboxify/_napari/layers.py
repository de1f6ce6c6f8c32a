"""napari layers <-> the core's types, without Qt or a viewer: the panel's conversions, each testable on layers
made in a test (``napari.layers.Image(...)``).

Coordinates: a Shapes layer's vertices are in its own data coordinates; the image's pixels are the frame the core
works in. Layers may differ in scale and offset (µm against pixels), never in rotation or shear (refused), and a
layer with fewer axes than a stack lines up with its trailing axes, as napari shows it.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Shapes

from ..geometry import labels_to_boxes
from ..shapes import BoxesFromShapes, between_layers, boxes_to_rectangles, shapes_to_boxes


def pixels(layer: Image):
    """The layer's full-resolution array: a multiscale (pyramid) layer's first level, where its pixels and the
    masks' grid are."""
    return layer.data[0] if layer.multiscale else layer.data


def spatial_shape(layer: Image) -> tuple[int, ...]:
    """The image's shape without its colour axis: (H, W), or a stack's (T, H, W) / (T, Z, H, W)."""
    shape = pixels(layer).shape
    return tuple(shape[:-1] if layer.rgb else shape)


def current_plane(layer: Image, current_step: tuple[int, ...], viewer_ndim: int) -> tuple:
    """The index of the plane shown (the stack axes of ``current_step``, the viewer's ``dims.current_step``);
    ``()`` for a 2-D image. A layer's axes are the viewer's last ones."""
    n_lead = len(spatial_shape(layer)) - 2
    if n_lead <= 0:
        return ()
    offset = viewer_ndim - layer.ndim
    return tuple(int(current_step[offset + i]) for i in range(n_lead))


def plane_image(layer: Image, plane: tuple, lazy: bool = False) -> np.ndarray:
    """One plane's pixels; ``lazy`` keeps a dask/zarr/memory-mapped layer's plane as it is, for the Segment
    buttons, which read a large image tile by tile (Predictor) instead of loading it whole."""
    data = pixels(layer)
    part = data[plane] if plane else data
    return part if lazy and hasattr(part, "shape") else np.asarray(part)


def in_frame(data: list, source, target) -> list:
    """Vertices in layer ``source``'s data coordinates -> ``target``'s (the image's pixels, or back).

    A Shapes layer made by napari's own button or a plugin may have other units or an offset than the image (e.g.
    µm against pixels): without this, boxes would be read at the wrong cells.
    """
    for layer in (source, target):
        n = len(layer.scale)
        if not (np.allclose(layer.rotate, np.eye(n)) and np.allclose(layer.shear, 0)
                and np.allclose(layer.affine.affine_matrix, np.eye(n + 1))):
            raise ValueError(f"layer '{layer.name}' is rotated, sheared or affine-transformed: CellBoxify reads "
                             "boxes on the image's pixel grid; reset that transform first")
    if np.array_equal(source.scale, target.scale) and np.array_equal(source.translate, target.translate):
        return list(data)
    return between_layers(data, source.scale, source.translate, target.scale, target.translate)


def axes_lacking(image: Image, layer: Shapes) -> int:
    """How many of the image's leading (stack) axes a Shapes layer lacks: > 0 for a 2-D layer over a stack, which
    napari shows on every slice, so its boxes are taken as the shown slice's (layers align by their trailing axes,
    so the lacking ones are the first)."""
    return len(spatial_shape(image)) - layer.ndim


def read_boxes(image: Image, layer: Shapes, shown: tuple) -> BoxesFromShapes:
    """The boxes of ``layer`` on ``image``'s pixels, per plane (``shapes.shapes_to_boxes``), with a notice per
    kind of shape changed or skipped; ``shown`` is the plane on screen (``current_plane``), which a 2-D layer
    over a stack is taken to be drawn on."""
    data = in_frame(list(layer.data), layer, image)
    notices = []
    missing = axes_lacking(image, layer)
    if missing > 0 and data:  # taken as drawn on the slice the user is looking at, not skipped
        plane = np.asarray(shown[:missing], dtype=float)
        data = [np.hstack([np.tile(plane, (len(v), 1)), np.asarray(v, dtype=float)]) for v in data]
        notices.append(f"the boxes of '{layer.name}' (a {layer.ndim}-D layer over a stack) are taken as boxes of "
                       f"the slice shown ({', '.join(str(int(i)) for i in plane)})")
    converted = shapes_to_boxes(data, list(layer.shape_type), spatial_shape(image))
    converted.notices[:0] = notices
    return converted


def stable_ids(layer: Shapes) -> np.ndarray:
    """A persistent ``cell_id`` per shape, kept in the layer's features, so that labels do not change when the
    boxes are segmented again: existing positive, unique ids stay, others get new ones."""
    n = len(layer.data)
    features = layer.features.copy()
    ids = np.zeros(n, dtype=np.int64)
    if "cell_id" in features and len(features) == n:
        ids = np.nan_to_num(features["cell_id"].to_numpy(dtype=float)).astype(np.int64)
    seen: set[int] = set()
    next_id = int(ids.max(initial=0)) + 1
    for i in range(n):
        if ids[i] <= 0 or ids[i] in seen:
            ids[i] = next_id
            next_id += 1
        seen.add(int(ids[i]))
    features["cell_id"] = ids
    layer.features = features
    return ids


def masks_to_boxes(image: Image, labels_layer: Labels, boxes_layer: Shapes, plane: tuple) -> int:
    """Replace the boxes of ``plane`` in ``boxes_layer`` by the boxes of the masks on that plane (each keeping
    its mask's id as ``cell_id``, so that segmenting the corrected boxes keeps the labels); boxes of other planes
    stay. Returns how many boxes were made (0: no masks there, the layer unchanged)."""
    labels = np.asarray(labels_layer.data[plane] if plane else labels_layer.data)
    ids, boxes = labels_to_boxes(labels)
    if len(ids) == 0:
        return 0
    features = boxes_layer.features
    old_ids = (features["cell_id"].to_numpy() if "cell_id" in features and len(features) == len(boxes_layer.data)
               else np.zeros(len(boxes_layer.data)))
    in_pixels = in_frame(list(boxes_layer.data), boxes_layer, image)
    missing = axes_lacking(image, boxes_layer)  # > 0: its boxes are the shown slice's, all replaced
    keep = [] if missing > 0 else [
        i for i, d in enumerate(in_pixels) if tuple(np.round(np.asarray(d)[0, :-2]).astype(int)) != plane]
    rects = in_frame(boxes_to_rectangles(boxes, plane[max(missing, 0):]), labels_layer, boxes_layer)
    new_types = [boxes_layer.shape_type[i] for i in keep] + ["rectangle"] * len(rects)
    boxes_layer.data = [boxes_layer.data[i] for i in keep] + rects
    boxes_layer.shape_type = new_types
    boxes_layer.features = {"cell_id": [int(old_ids[i]) for i in keep] + [int(i) for i in ids]}
    return len(rects)


def calibration(image: Image) -> dict:
    """The image's pixel size, offset and unit (its layer scale, translate and units) for the measurements
    table, or nothing for a plain pixel grid."""
    scale, translate = tuple(image.scale[-2:]), tuple(image.translate[-2:])
    units = {f"{u:~}".replace("µ", "u") for u in getattr(image, "units", ())[-2:]} - {"px", "pixel"}
    if scale == (1.0, 1.0) and translate == (0.0, 0.0) and not units:
        return {}
    return {"pixel_size": scale, "origin": translate, "unit": units.pop() if len(units) == 1 else None}
