import json

import numpy as np
import pytest

from napari_cellboxify.data.coco import CocoError, CocoSource, load_coco
from napari_cellboxify.data.dataset import StepBatches

from conftest import tiny_config


def _batches(json_path, images_dir, n=4):
    c = tiny_config(steps=n)
    c.train.batch_size = 2
    source = CocoSource(load_coco(json_path, images_dir), c)
    batches = StepBatches(source, c)
    return [batches[i] for i in range(n)]


def test_box_mode_reads_only_bbox(synthetic_coco, tmp_path):
    """Deleting every segmentation gives identical training batches."""
    json_path, images_dir = synthetic_coco
    data = json.loads(json_path.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
        ann.pop("area", None)
    stripped = tmp_path / "no_segm.json"
    stripped.write_text(json.dumps(data))
    a, b = _batches(json_path, images_dir), _batches(stripped, images_dir)
    for batch_a, batch_b in zip(a, b):
        for (img_a, t_a), (img_b, t_b) in zip(batch_a, batch_b):
            assert np.array_equal(img_a.numpy(), img_b.numpy())
            assert set(t_a) == set(t_b) == {"boxes", "labels"}
            assert np.array_equal(t_a["boxes"].numpy(), t_b["boxes"].numpy())


def test_mask_mode_decodes_masks_that_match_the_boxes(synthetic_coco):
    json_path, images_dir = synthetic_coco
    c = tiny_config()
    source = CocoSource(load_coco(json_path, images_dir), c, with_masks=True)
    sample = source.load(0)
    assert sample.masks.shape[0] == len(sample.boxes_xyxy)
    for box, mask in zip(sample.boxes_xyxy, sample.masks):
        rows, cols = np.nonzero(mask)
        assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == [int(v) for v in box]


def test_real_livecell_loads(livecell_dir):
    coco = load_coco(livecell_dir / "train" / "annotations.json", livecell_dir / "train" / "images")
    assert len(coco.images) == 10 and sum(len(i.boxes_xyxy) for i in coco.images) == 2535
    assert not coco.skipped


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("images"), "missing key 'images'"),
        (lambda d: d.update(annotations={}), "'annotations' must be a list"),
        (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "outside"),
        (lambda d: d["images"][0].update(file_name="/etc/passwd"), "absolute"),
        (lambda d: d["images"][0].update(id="one"), "integer"),
        (lambda d: d["images"].append(dict(d["images"][0])), "twice"),
        (lambda d: d["images"][0].update(file_name="missing.tif"), "not found"),
    ],
)
def test_bad_files_get_a_message_naming_the_problem(synthetic_coco, tmp_path, mutate, message):
    json_path, images_dir = synthetic_coco
    data = json.loads(json_path.read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CocoError, match=message):
        load_coco(bad, images_dir)


def test_bad_annotations_are_skipped_and_counted(synthetic_coco, tmp_path):
    json_path, images_dir = synthetic_coco
    data = json.loads(json_path.read_text())
    n = len(data["annotations"])
    data["annotations"] += [
        {"image_id": 1, "bbox": [1, 2, -3, 4]},
        {"image_id": 1, "bbox": [1, 2, float("nan"), 4]},
        {"image_id": 99, "bbox": [1, 2, 3, 4]},
        {"image_id": 1, "bbox": "oops"},
        "not an object",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    coco = load_coco(bad, images_dir)
    assert sum(len(i.boxes_xyxy) for i in coco.images) == n
    assert sum(coco.skipped.values()) == 5


def test_malformed_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(CocoError, match="not valid JSON"):
        load_coco(bad, tmp_path)
