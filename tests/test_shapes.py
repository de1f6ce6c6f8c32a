import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_cellboxify.data.coco import load_coco
from napari_cellboxify.export import boxes_coco
from napari_cellboxify.shapes import between_layers, boxes_to_rectangles, shapes_to_boxes


def rect(r0, c0, r1, c1):
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=float)


def test_rectangle_becomes_the_box_of_its_pixels():
    out = shapes_to_boxes([rect(9.5, 19.5, 29.5, 49.5)], ["rectangle"], (100, 100))
    np.testing.assert_allclose(out.boxes[()], [[20, 10, 50, 30]])
    assert out.notices == []


def test_bad_shapes_are_fixed_or_skipped_with_notices():
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rotated = (rect(-10, -5, 10, 5) @ rot.T) + 50
    ellipse = rect(10, 10, 20, 30)
    polygon = np.array([[60, 60], [70, 80], [80, 65]], float)
    data = [rotated, ellipse, polygon, rect(-50, -50, -10, -10), rect(5, 5, 5, 20), rect(90, 90, 120, 130)]
    types = ["rectangle", "ellipse", "polygon", "rectangle", "rectangle", "rectangle"]
    out = shapes_to_boxes(data, types, (100, 100))
    assert len(out.boxes[()]) == 4  # rotated, ellipse, polygon, clipped
    assert out.shape_index[()].tolist() == [0, 1, 2, 5]
    text = " ".join(out.notices)
    for words in ("rotated", "ellipse", "polygon", "outside the image (skipped)", "zero-area", "clipped"):
        assert words in text
    np.testing.assert_allclose(out.boxes[()][3], [90.5, 90.5, 100, 100])


def test_stack_boxes_are_grouped_by_slice_and_wrong_slices_skipped():
    on_2 = np.hstack([np.full((4, 1), 2.0), rect(0, 0, 10, 10)])
    on_7 = np.hstack([np.full((4, 1), 7.0), rect(0, 0, 10, 10)])
    out = shapes_to_boxes([on_2, on_7], ["rectangle"] * 2, (5, 64, 64))
    assert list(out.boxes) == [(2,)]
    assert any("slice outside" in n for n in out.notices)


def test_thousands_of_boxes():
    rng = np.random.default_rng(0)
    r0, c0 = rng.uniform(0, 900, (2, 5000))
    data = [rect(a, b, a + 10, b + 12) for a, b in zip(r0, c0)]
    out = shapes_to_boxes(data, ["rectangle"] * 5000, (1000, 1000))
    assert len(out.boxes[()]) == 5000


def test_duplicate_boxes_are_kept_as_drawn():
    out = shapes_to_boxes([rect(1, 1, 9, 9), rect(1, 1, 9, 9)], ["rectangle"] * 2, (20, 20))
    assert len(out.boxes[()]) == 2


finite = st.floats(min_value=0, max_value=500, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.floats(2, 100), st.floats(2, 100)), min_size=1, max_size=20))
def test_shapes_to_coco_to_shapes_round_trip(tmp_path_factory, specs):
    boxes = np.array([[x, y, min(x + w, 600), min(y + h, 600)] for x, y, w, h in specs], dtype=np.float32)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
    if not len(boxes):
        return
    rects = boxes_to_rectangles(boxes)
    back = shapes_to_boxes(rects, ["rectangle"] * len(rects), (600, 600))
    np.testing.assert_allclose(back.boxes[()], boxes, atol=1e-3)
    folder = tmp_path_factory.mktemp("rt")
    (folder / "a.tif").write_bytes(b"")
    (folder / "ann.json").write_text(json.dumps(boxes_coco([("a.tif", (600, 600), back.boxes[()])])))
    coco = load_coco(folder / "ann.json", folder)
    np.testing.assert_allclose(coco.images[0].boxes_xyxy, boxes, atol=1e-3)


def test_between_layers_maps_through_the_world_and_back():
    # A box over pixels 10..29 (rows) x 20..49 (cols) of an image at 0.5 µm per pixel, offset (100, 200) µm, as a
    # Shapes layer in µm (scale 1) holds it: corners at 100 + 0.5 * (row) etc.
    pixels = boxes_to_rectangles(np.array([[20, 10, 50, 30]], np.float32))
    world = between_layers(pixels, (0.5, 0.5), (100, 200), (1, 1), (0, 0))
    np.testing.assert_allclose(world[0].min(0), [100 + 0.5 * 9.5, 200 + 0.5 * 19.5])
    back = between_layers(world, (1, 1), (0, 0), (0.5, 0.5), (100, 200))
    np.testing.assert_allclose(back[0], pixels[0])
    assert np.allclose(shapes_to_boxes(back, ["rectangle"], (64, 64)).boxes[()], [[20, 10, 50, 30]])
    # A 2-D layer over a stack: the trailing axes are mapped, the plane index of a 3-D layer's vertices too.
    on_plane = [np.hstack([np.full((4, 1), 2.0), pixels[0]])]
    stack = between_layers(on_plane, (3.0, 0.5, 0.5), (0, 100, 200), (1, 1, 1), (0, 0, 0))
    assert np.allclose(stack[0][:, 0], 6.0)
