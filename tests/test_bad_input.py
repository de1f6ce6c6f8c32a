"""Hostile and unusual input: one clear line, exit 2 for bad arguments before any model loads, nothing left that
looks like a result, bounded memory whatever the input's size (the 20,000² case is benchmarks/bench_scaling.py
--sides)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import run_cli, tiny_config, write_synthetic_coco

REPO = Path(__file__).resolve().parents[1]


def _tiny_weights(path: Path) -> Path:
    import torch

    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.model import build_model

    torch.manual_seed(0)
    config = tiny_config()
    config.model.box_score_thresh = 0.0
    save_weights(path, build_model(config), config)
    return path


# ---- arguments ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["predict", "img.tif", "--out", "o", "--set", "nonsense"],
    ["predict", "img.tif", "--out", "o", "--set", "model.no_such_key=1"],
    ["predict", "img.tif", "--out", "o", "--set", "model.image_scale=large"],
    ["evaluate", "--data", "a.json", "--images", ".", "--out", "o", "--set", "nonsense"],
    ["fit-zoom", "--data", "a.json", "--images", ".", "--set", "nonsense"],
    ["train", "--data", "a.json", "--images", ".", "--out", "o", "--set", "nonsense"],
    ["predict", "img.tif", "--out", "o", "--format", "bogus"],
    ["predict", "img.tif", "--out", "o", "--format", ","],
])
def test_bad_settings_and_formats_are_exit_2_before_any_weights_load(tmp_path, args):
    # --weights names a file that does not exist: had anything tried to load it, the error would be "not found"
    # with exit 1
    verb_takes_weights = args[0] in ("predict", "evaluate", "fit-zoom")
    extra = ["--weights", tmp_path / "missing.pt"] if verb_takes_weights else []
    result = run_cli(*args, *extra)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "not found" not in result.stderr


# ---- output folders -----------------------------------------------------------------------------------------
def test_predict_refuses_to_replace_an_earlier_run_without_overwrite(tmp_path):
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(64, 64), n_cells=3)
    weights = _tiny_weights(tmp_path / "w.pt")
    base = ["predict", images_dir, "--out", tmp_path / "pred", "--weights", weights, "--format", "tiff,coco"]
    first = run_cli(*base)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "cell(s)" in first.stdout  # it says how many it found
    before = (tmp_path / "pred" / "predictions_coco.json").read_bytes()
    again = run_cli(*base)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "synthetic_0_labels.tif" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (tmp_path / "pred" / "predictions_coco.json").read_bytes() == before
    # another format into the same folder replaces nothing: allowed
    csv_only = run_cli("predict", images_dir, "--out", tmp_path / "pred", "--weights", weights, "--format", "csv")
    assert csv_only.returncode == 0
    assert run_cli(*base, "--overwrite").returncode == 0


def test_an_unwritable_out_is_found_before_anything_runs(tmp_path, monkeypatch):
    from napari_cellboxify import io_utils

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", refuse)  # a read-only mount, as root cannot chmod one
    with pytest.raises(ValueError, match="not writable"):
        io_utils.check_folder(tmp_path / "out", "--out")
    monkeypatch.undo()
    if os.geteuid() != 0:  # a real read-only folder, where permissions hold
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        result = run_cli("predict", tmp_path / "none.tif", "--out", locked)
        assert result.returncode == 1 and "not writable" in result.stderr


# ---- images ---------------------------------------------------------------------------------------------------
def test_an_empty_image_has_no_cells():
    import torch

    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    torch.manual_seed(0)
    config = tiny_config()
    predictor = Predictor(build_model(config), "cpu", score_threshold=0.0)
    for image in (np.zeros((256, 256), np.uint8), np.full((256, 256), 7, np.uint16), np.zeros((300, 300, 3))):
        assert len(predictor.segment(image)) == 0
    # the same network does answer on an image with contrast (the empty answer is the rule, not the weights)
    assert len(predictor.segment(np.random.default_rng(0).random((256, 256)))) > 0


# ---- annotations ----------------------------------------------------------------------------------------------
def _bad_rows_coco(tmp_path: Path) -> tuple[Path, Path]:
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=4)
    coco = json.loads(json_path.read_text())
    bad = [
        {"image_id": 99, "bbox": [1, 1, 5, 5]},
        {"image_id": 1, "bbox": [10, 10, -5, 5]},
        {"image_id": 1, "bbox": [10, 10, float("nan"), 5]},
        {"image_id": 1, "bbox": [10, "x", 5, 5]},
        {"image_id": 1, "bbox": [10, 10, 1e30, 1e30]},
        {"image_id": 1, "bbox": [500, 500, 5, 5]},
    ]
    coco["annotations"] += [dict(a, id=1000 + i, category_id=1) for i, a in enumerate(bad)]
    json_path.write_text(json.dumps(coco))  # NaN is written as NaN, as Python's json reads it
    return json_path, images_dir


def test_load_coco_skips_each_bad_box_with_its_reason(tmp_path):
    from napari_cellboxify.data.coco import load_coco

    coco = load_coco(*_bad_rows_coco(tmp_path))
    assert coco.skipped == {"unknown image_id": 1, "bbox with zero or negative size": 1,
                            "bbox missing, not 4 numbers, or NaN/inf": 2, "bbox reaching far outside its image": 1,
                            "bbox outside its image": 1}
    assert len(coco.images[0].boxes_xyxy) == 4


def test_a_box_drawn_to_the_border_is_kept(tmp_path):
    from napari_cellboxify.data.coco import load_coco

    (tmp_path / "a.png").write_bytes(b"")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [-3, 70, 20, 12.5]},  # past the edge by a little
                            {"id": 2, "image_id": 1, "bbox": [10, 10, 1e6, 5]}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    loaded = load_coco(tmp_path / "a.json", tmp_path)
    assert len(loaded.images[0].boxes_xyxy) == 1 and loaded.skipped == {"bbox reaching far outside its image": 1}
    # without the image's size in the file only the absurd is refused
    del coco["images"][0]["width"]
    coco["annotations"][1]["bbox"] = [10, 10, 1e30, 5]
    (tmp_path / "a.json").write_text(json.dumps(coco))
    assert load_coco(tmp_path / "a.json", tmp_path).skipped == {"bbox larger than any image": 1}


def test_evaluate_says_what_it_skipped_and_records_it_in_metrics(tmp_path):
    json_path, images_dir = _bad_rows_coco(tmp_path)
    weights = _tiny_weights(tmp_path / "w.pt")
    result = run_cli("evaluate", "--data", json_path, "--images", images_dir, "--out", tmp_path / "eval",
                     "--weights", weights)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped 1 annotation(s): unknown image_id" in result.stderr
    assert "skipped 1 annotation(s): bbox reaching far outside its image" in result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sum(metrics["skipped_annotations"].values()) == 6


def test_evaluate_refuses_an_image_with_more_cells_than_it_can_score_before_loading_weights(tmp_path):
    from napari_cellboxify.evaluate import MAX_CELLS_PER_IMAGE

    tifffile.imwrite(tmp_path / "crowd.tif", np.zeros((520, 704), np.uint8))
    n = MAX_CELLS_PER_IMAGE + 1
    xy = np.random.default_rng(0).uniform(0, 500, (n, 2))
    coco = {"images": [{"id": 1, "file_name": "crowd.tif", "width": 704, "height": 520}],
            "annotations": [{"id": i + 1, "image_id": 1, "bbox": [x, y, 3, 3]} for i, (x, y) in enumerate(xy.tolist())]}
    (tmp_path / "crowd.json").write_text(json.dumps(coco))
    result = run_cli("evaluate", "--data", tmp_path / "crowd.json", "--images", tmp_path, "--out", tmp_path / "e",
                     "--weights", tmp_path / "missing.pt")
    assert result.returncode == 1 and f"{n:,} annotated cells" in result.stderr and "not found" not in result.stderr


def test_a_crowded_crop_trains_a_bounded_subset_of_its_boxes_and_says_so():
    from napari_cellboxify.data.dataset import CrowdedCropWarning, Sample, StepBatches

    config = tiny_config()
    config.data.crop_size = None  # the whole image: every box of it in one step
    config.data.max_boxes_per_crop = 500
    xy = np.random.default_rng(0).uniform(0, 200, (20_000, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + 4], axis=1)

    class Crowded:
        def __len__(self):
            return 1

        def load(self, index):
            return Sample(np.random.default_rng(1).random((208, 208)).astype(np.float32), boxes, name="crowd.tif")

    batches = StepBatches(Crowded(), config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = batches[0], batches[1]
    assert [len(t["boxes"]) for _, t in first + second] == [500, 500]
    crowded = [w for w in caught if issubclass(w.category, CrowdedCropWarning)]
    assert len(crowded) == 1 and "crowd.tif" in str(crowded[0].message)  # said once, not every step


# ---- runs -----------------------------------------------------------------------------------------------------
def test_screenshot_script_needs_an_out_and_describes_itself():
    widget_png = REPO / "docs" / "widget.png"
    before = widget_png.stat().st_mtime_ns if widget_png.exists() else None
    result = subprocess.run([sys.executable, "scripts/screenshot.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--out" in result.stderr
    assert (widget_png.stat().st_mtime_ns if widget_png.exists() else None) == before
    helped = subprocess.run([sys.executable, "scripts/screenshot.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "screenshot" in helped.stdout.lower() and "--weights" in helped.stdout
