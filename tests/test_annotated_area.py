import json

import numpy as np

from napari_cellboxify.config import CellBoxifyConfig
from napari_cellboxify.recipes import fine_tune_config
from napari_cellboxify.data.annotated_area import annotated_area, crop_to_area
from napari_cellboxify.data.coco import CocoSource, load_coco

from conftest import tiny_config


def test_the_area_is_the_rectangle_holding_the_boxes_plus_half_a_median_side():
    boxes = np.array([[40, 50, 60, 70], [80, 60, 100, 80], [60, 90, 80, 110]], np.float32)  # sides all 20
    assert annotated_area(boxes, (300, 400)) == (40, 120, 30, 110)
    assert annotated_area(boxes, (300, 400), margin=0) == (50, 110, 40, 100)
    # Clipped to the image; no boxes means the whole image.
    assert annotated_area(np.array([[0, 0, 20, 20]], np.float32), (100, 50)) == (0, 30, 0, 30)
    assert annotated_area(np.zeros((0, 4), np.float32), (100, 50)) == (0, 100, 0, 50)


def test_cropping_moves_boxes_and_masks_with_the_image():
    image = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    masks = np.zeros((1, 100, 120), np.uint8)
    masks[0, 30:40, 50:70] = 1
    boxes = np.array([[50, 30, 70, 40]], np.float32)
    cut, moved, cut_masks = crop_to_area(image, boxes, masks, (20, 60, 45, 90))
    assert cut.shape == (40, 45) and cut[0, 0] == image[20, 45]
    np.testing.assert_array_equal(moved, [[5, 10, 25, 20]])
    rows, cols = np.nonzero(cut_masks[0])
    assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == [5, 10, 25, 20]


def test_a_partly_boxed_image_trains_only_inside_its_boxed_area(synthetic_coco, tmp_path):
    json_path, images_dir = synthetic_coco
    data = json.loads(json_path.read_text())
    first = data["images"][0]["id"]
    corner = [a for a in data["annotations"] if a["image_id"] == first and a["bbox"][0] + a["bbox"][2] < 64
              and a["bbox"][1] + a["bbox"][3] < 64]
    assert corner, "the synthetic image needs a cell in its top-left corner"
    data["images"] = data["images"][:1]
    data["annotations"] = corner
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    coco = load_coco(partial, images_dir)
    config = tiny_config()
    assert config.data.annotated_area == "boxes"  # the default
    sample = CocoSource(coco, config).load(0)
    y0, y1, x0, x1 = annotated_area(coco.images[0].boxes_xyxy, (128, 128))
    assert sample.image.shape == (y1 - y0, x1 - x0) and sample.image.shape[0] < 128 and sample.image.shape[1] < 128
    np.testing.assert_allclose(sample.boxes_xyxy + [x0, y0, x0, y0], coco.images[0].boxes_xyxy)

    config.data.annotated_area = "image"
    whole = CocoSource(coco, config).load(0)
    assert whole.image.shape == (128, 128)
    np.testing.assert_array_equal(whole.image[y0:y1, x0:x1], sample.image)


def test_fine_tuning_takes_the_annotated_area_from_todays_default_not_from_the_weights():
    trained = CellBoxifyConfig()
    trained.data.annotated_area = "image"
    assert fine_tune_config(trained).data.annotated_area == "boxes"


def test_area_fraction_reports_the_share_of_pixels_trained_on():
    from napari_cellboxify.data.annotated_area import area_fraction

    corner = np.array([[0, 0, 20, 20]], np.float32)  # area 30 x 30 with the margin
    assert area_fraction([(corner, (100, 100))]) == 0.09
    everywhere = np.array([[0, 0, 20, 20], [80, 80, 100, 100]], np.float32)
    assert area_fraction([(corner, (100, 100)), (everywhere, (100, 100))]) == (900 + 10000) / 20000
