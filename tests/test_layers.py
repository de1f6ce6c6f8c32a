"""The panel's layer <-> core conversions (_napari/layers.py) on layers made here, without a viewer or Qt."""

import numpy as np
import pytest

napari_layers = pytest.importorskip("napari.layers")

from napari_cellboxify._napari import layers  # noqa: E402
from napari_cellboxify.shapes import boxes_to_rectangles  # noqa: E402

Image, Labels, Shapes = napari_layers.Image, napari_layers.Labels, napari_layers.Shapes


def test_boxes_drawn_in_micrometres_are_read_on_the_image_pixels():
    image = Image(np.zeros((100, 120), np.uint8), scale=(0.5, 0.5), translate=(10.0, 20.0))
    # a box over pixels x 10..30, y 4..14, drawn in a layer of µm (the image's units and place)
    rect = boxes_to_rectangles(np.array([[10, 4, 30, 14]], np.float32))
    boxes = Shapes([r * 0.5 + np.array([10.0, 20.0]) for r in rect], shape_type="rectangle")
    converted = layers.read_boxes(image, boxes, shown=())
    np.testing.assert_allclose(converted.boxes[()], [[10, 4, 30, 14]], atol=1e-4)
    assert converted.notices == []


def test_a_2d_boxes_layer_over_a_stack_is_the_plane_shown_and_says_so():
    image = Image(np.zeros((3, 64, 64), np.uint8))
    boxes = Shapes(boxes_to_rectangles(np.array([[5, 5, 20, 20]], np.float32)), shape_type="rectangle", name="b")
    assert layers.axes_lacking(image, boxes) == 1
    shown = layers.current_plane(image, current_step=(2, 0, 0), viewer_ndim=3)
    converted = layers.read_boxes(image, boxes, shown)
    assert shown == (2,) and list(converted.boxes) == [(2,)]
    assert "taken as boxes of the slice shown (2)" in converted.notices[0]


def test_a_rotated_layer_is_refused_with_its_name():
    image = Image(np.zeros((32, 32), np.uint8))
    boxes = Shapes(boxes_to_rectangles(np.array([[2, 2, 9, 9]], np.float32)), shape_type="rectangle",
                   rotate=30, name="tilted")
    with pytest.raises(ValueError, match="'tilted' is rotated"):
        layers.read_boxes(image, boxes, shown=())


def test_stable_ids_keep_existing_ids_and_renumber_missing_or_repeated_ones():
    boxes = Shapes(boxes_to_rectangles(np.array([[0, 0, 4, 4], [5, 5, 9, 9], [10, 10, 14, 14]], np.float32)),
                   shape_type="rectangle", features={"cell_id": [7, 7, 0]})
    ids = layers.stable_ids(boxes)
    assert ids.tolist() == [7, 8, 9] and boxes.features["cell_id"].tolist() == [7, 8, 9]
    assert layers.stable_ids(boxes).tolist() == [7, 8, 9]  # a second run changes nothing


def test_masks_to_boxes_replaces_the_plane_and_keeps_the_mask_ids():
    image = Image(np.zeros((2, 40, 40), np.uint8))
    labels = np.zeros((2, 40, 40), np.uint32)
    labels[1, 5:15, 8:20] = 4
    labels[1, 25:35, 20:30] = 9
    masks = Labels(labels)
    boxes = Shapes(boxes_to_rectangles(np.array([[1, 1, 5, 5], [2, 2, 6, 6]], np.float32), (0,))
                   + boxes_to_rectangles(np.array([[30, 30, 38, 38]], np.float32), (1,)),
                   shape_type="rectangle", ndim=3, features={"cell_id": [1, 2, 3]})
    made = layers.masks_to_boxes(image, masks, boxes, plane=(1,))
    assert made == 2 and len(boxes.data) == 4
    assert boxes.features["cell_id"].tolist() == [1, 2, 4, 9]  # plane 0's boxes stay, plane 1's are the masks'
    converted = layers.read_boxes(image, boxes, shown=(1,))
    np.testing.assert_allclose(converted.boxes[(1,)], [[8, 5, 20, 15], [20, 25, 30, 35]], atol=1e-4)
    assert layers.masks_to_boxes(image, masks, boxes, plane=(0,)) == 0 and len(boxes.data) == 4


def test_calibration_is_empty_for_plain_pixels_and_gives_size_origin_and_unit():
    assert layers.calibration(Image(np.zeros((8, 8)))) == {}
    calibrated = layers.calibration(Image(np.zeros((8, 8)), scale=(0.65, 0.65), translate=(1.0, 2.0), units="µm"))
    assert calibrated == {"pixel_size": (0.65, 0.65), "origin": (1.0, 2.0), "unit": "um"}
