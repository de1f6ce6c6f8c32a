import json

import pytest
import torch

from conftest import run_cli, tiny_config, write_synthetic_coco



@pytest.mark.parametrize("verb", ["train", "fine-tune", "evaluate", "predict", "export"])
def test_every_verb_documents_its_options(verb):
    result = run_cli(verb, "--help")
    assert result.returncode == 0
    assert "--out" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "x.json"],
        ["train", "--data", "a", "--images", "b", "--out", "c", "--steps", "-3"],
        ["train", "--data", "a", "--images", "b", "--out", "c", "--supervision", "points"],
        ["predict", "img.tif", "--out", "o", "--tile", "zero"],
        ["predict", "img.tif", "--out", "o", "--score-threshold", "5"],
        ["predict", "img.tif", "--out", "o", "--score-threshold", "nan"],
        ["predict", "img.tif", "--out", "o", "--pixel-size", "0"],
        ["predict", "img.tif", "--out", "o", "--pixel-size", "0.5,0.5,1"],
        ["fine-tune", "--data", "a", "--images", "b", "--out", "c", "--minutes", "0"],
        ["fine-tune", "--data", "a", "--images", "b", "--out", "c", "--minutes", "nan"],
        ["fine-tune", "--data", "a", "--images", "b", "--out", "c", "--device", "tpu"],
        ["fine-tune", "--data", "a", "--images", "b", "--out", "c", "--max-steps", "0"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_config_override_is_named_in_one_line(tmp_path):
    result = run_cli("train", "--data", tmp_path / "a.json", "--images", tmp_path, "--out", tmp_path / "run",
                     "--set", "loss.no_such_weight=2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no_such_weight" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # predict's --set changes inference settings only: another architecture is refused, also in one line
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "cells.tif", np.zeros((64, 64), np.uint8))
    result = run_cli("predict", tmp_path / "cells.tif", "--out", tmp_path / "o", "--set", "model.backbone=resnet50")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not match" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_files_get_one_line_and_exit_1(tmp_path):
    result = run_cli("train", "--data", tmp_path / "none.json", "--images", tmp_path, "--out", tmp_path / "run")
    assert result.returncode == 1
    assert "not found" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("predict", tmp_path / "none.tif", "--out", tmp_path / "o", "--weights", tmp_path / "w.pt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # the missing image is named before anything else is tried, and no empty output folder is left behind
    assert "image not found" in result.stderr and "none.tif" in result.stderr and not (tmp_path / "o").exists()
    (tmp_path / "a_file").write_text("")
    result = run_cli("evaluate", "--data", tmp_path / "none.json", "--images", tmp_path, "--out", tmp_path / "a_file")
    assert result.returncode == 1 and "is a file; give a folder" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("predict", tmp_path / "none.tif", "--out", tmp_path / "a_file" / "masks")
    assert result.returncode == 1 and "a_file is a file" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``cellboxify train`` on two synthetic images (2 steps): (run folder, COCO file, image folder), shared by
    the tests of the other verbs below."""
    root = tmp_path_factory.mktemp("cli")
    json_path, images_dir = write_synthetic_coco(root / "data", n_images=2, shape=(96, 96), n_cells=5)
    config = tiny_config(steps=2)
    config.model.box_score_thresh = 0.0
    config.save(root / "tiny.yaml")
    run = root / "run"
    result = run_cli("train", "--data", json_path, "--images", images_dir, "--out", run, "--config", root / "tiny.yaml",
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "model.pt").exists()
    return run, json_path, images_dir


@pytest.fixture(scope="module")
def predicted(trained, tmp_path_factory):
    """``cellboxify predict`` of the two training images in every format: the output folder."""
    run, _, images_dir = trained
    out = tmp_path_factory.mktemp("pred")
    result = run_cli("predict", images_dir, "--out", out, "--weights", run / "model.pt",
                     "--format", "tiff,coco,csv,boxes", "--score-threshold", "0", "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_predict_writes_labels_coco_csv_and_scored_boxes(predicted):
    names = sorted(p.name for p in predicted.iterdir())
    assert "predictions_coco.json" in names and "synthetic_0_labels.tif" in names and "synthetic_0_cells.csv" in names
    boxes = json.loads((predicted / "boxes.json").read_text())
    assert boxes["annotations"] and all(0 <= a["score"] <= 1 and len(a["bbox"]) == 4 for a in boxes["annotations"])
    coco = json.loads((predicted / "predictions_coco.json").read_text())
    assert 0 < len(coco["annotations"]) <= len(boxes["annotations"])  # outlines of the boxes (empty ones dropped)


def test_predict_segments_a_stack_plane_by_plane_into_one_label_stack(trained, predicted, tmp_path):
    import numpy as np
    import tifffile

    run, _, images_dir = trained
    # a (T, H, W) stack of the same two images: each plane segmented as the image alone was
    planes = [tifffile.imread(images_dir / f"synthetic_{i}.tif") for i in range(2)]
    tifffile.imwrite(tmp_path / "movie.tif", np.stack(planes))
    result = run_cli("predict", tmp_path / "movie.tif", "--out", tmp_path / "pred_stack", "--weights", run / "model.pt",
                     "--format", "tiff,coco,csv", "--score-threshold", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 planes" in result.stdout
    stack = tifffile.imread(tmp_path / "pred_stack" / "movie_labels.tif")
    assert stack.shape == (2, 96, 96)
    for i in range(2):
        np.testing.assert_array_equal(stack[i], tifffile.imread(predicted / f"synthetic_{i}_labels.tif"))
        assert (tmp_path / "pred_stack" / f"movie_{i}_cells.csv").exists()
    coco = json.loads((tmp_path / "pred_stack" / "predictions_coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["movie_0.tif", "movie_1.tif"]


def test_predict_gives_sizes_in_micrometres_from_the_file_or_pixel_size(trained, tmp_path):
    import tifffile

    from napari_cellboxify.data.images import read_pixel_size

    run, _, images_dir = trained
    plane = tifffile.imread(images_dir / "synthetic_0.tif")
    tifffile.imwrite(tmp_path / "calibrated.tif", plane, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    result = run_cli("predict", tmp_path / "calibrated.tif", images_dir / "synthetic_1.tif",
                     "--out", tmp_path / "pred_um", "--weights", run / "model.pt", "--format", "tiff,csv",
                     "--score-threshold", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read from 1 of 2 files" in result.stdout
    header, first = (line.split(",") for line in (tmp_path / "pred_um" / "calibrated_cells.csv").read_text().splitlines()[:2])
    row = dict(zip(header, map(float, first)))
    assert row["area_um2"] == pytest.approx(row["area"] * 0.25, abs=1e-3)
    assert row["centroid_x_um"] == pytest.approx(row["centroid_x"] * 0.5, abs=1e-3)
    assert read_pixel_size(tmp_path / "pred_um" / "calibrated_labels.tif") == pytest.approx((0.5, 0.5))
    assert "area_um2" not in (tmp_path / "pred_um" / "synthetic_1_cells.csv").read_text().splitlines()[0]
    result = run_cli("predict", images_dir / "synthetic_1.tif", "--out", tmp_path / "pred_given", "--weights",
                     run / "model.pt", "--format", "csv", "--score-threshold", "0", "--pixel-size", "0.65")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "area_um2" in (tmp_path / "pred_given" / "synthetic_1_cells.csv").read_text().splitlines()[0]


def test_train_on_predicted_boxes_as_pseudo_labels(trained, predicted, tmp_path):
    run, json_path, images_dir = trained
    # thresholds at 0: an untrained model's scores are low
    result = run_cli("train", "--data", json_path, "--images", images_dir, "--out", tmp_path / "self",
                     "--init", run / "model.pt", "--steps", "2", "--device", "cpu",
                     "--pseudo-labels", predicted / "boxes.json", "--pseudo-images", images_dir,
                     "--set", "data.pseudo_score_thresh=0", "--set", "data.pseudo_ignore_thresh=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pseudo-labeled image(s)" in result.stderr and (tmp_path / "self" / "model.pt").exists()
    result = run_cli("train", "--data", json_path, "--images", images_dir, "--out", tmp_path / "self2",
                     "--pseudo-labels", predicted / "boxes.json")
    assert result.returncode == 1 and "go together" in result.stderr


def test_evaluate_scores_masks_with_and_without_tta_and_from_oracle_boxes(trained, tmp_path):
    run, json_path, images_dir = trained
    result = run_cli("evaluate", "--data", json_path, "--images", images_dir, "--out", tmp_path / "ev",
                     "--weights", run / "model.pt")
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("segm AP (0-100" in line for line in result.stdout.splitlines())
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0 <= metrics["segm"]["AP"] <= 100 and metrics["tta"] == "off"
    result = run_cli("evaluate", "--data", json_path, "--images", images_dir, "--out", tmp_path / "ev_tta",
                     "--weights", run / "model.pt", "--tta", "flips")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "ev_tta" / "metrics.json").read_text())["tta"] == "flips"
    result = run_cli("evaluate", "--data", json_path, "--images", images_dir, "--out", tmp_path / "ev2",
                     "--weights", run / "model.pt", "--oracle-boxes")
    assert result.returncode == 0, result.stderr[-2000:]
    oracle = json.loads((tmp_path / "ev2" / "metrics.json").read_text())["oracle_boxes"]
    assert oracle["num_cells"] == 10 and 0.5 < oracle["mean_iou_filled_box"] < 0.95


def test_export_half_precision_is_smaller_and_loads_the_same_weights(trained, tmp_path):
    from napari_cellboxify.checkpoint import read_checkpoint

    run, _, _ = trained
    result = run_cli("export", run, "--out", tmp_path / "half.pt", "--half")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "half.pt").stat().st_size < (run / "model.pt").stat().st_size
    full, half = read_checkpoint(run / "model.pt")["model"], read_checkpoint(tmp_path / "half.pt")["model"]
    assert set(full) == set(half)
    assert all(torch.allclose(full[k].float(), half[k].float(), rtol=1e-2, atol=1e-3) for k in full
               if full[k].is_floating_point())


def test_fine_tuning_from_weights_needs_no_config_file(tmp_path):
    # `cellboxify train --init W` rebuilds W's own architecture (here not the defaults' ResNet-50)
    from napari_cellboxify.checkpoint import read_checkpoint, save_weights
    from napari_cellboxify.model import build_model

    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=4)
    config = tiny_config(steps=2)
    save_weights(tmp_path / "w.pt", build_model(config, load_pretrained=False), config)
    run = tmp_path / "run"
    result = run_cli("train", "--data", json_path, "--images", images_dir, "--out", run, "--init", tmp_path / "w.pt",
                     "--steps", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    tuned = read_checkpoint(run / "model.pt")["config"]
    assert tuned["model"] == config.to_dict()["model"] and tuned["train"]["lr"] == 1e-4


def test_resume_continues_where_it_stopped(tmp_path):
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=4)
    config = tiny_config(steps=2)
    config.save(tmp_path / "tiny.json")
    run = tmp_path / "run"
    base = ["train", "--data", json_path, "--images", images_dir, "--out", run, "--config", tmp_path / "tiny.json"]
    assert run_cli(*base).returncode == 0
    result = run_cli(*base, "--resume", "--steps", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed at step 2" in result.stderr
    assert "trained 1 step (from step 2 to 3 of 3)" in result.stdout, result.stdout
    lines = (run / "loss_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_fine_tune_from_the_command_line_writes_model_report_and_one_line(tmp_path):
    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.model import build_model

    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(128, 128), n_cells=10)
    config = tiny_config()
    save_weights(tmp_path / "start.pt", build_model(config, load_pretrained=False), config)
    args = ["fine-tune", "--data", json_path, "--images", images_dir, "--out", tmp_path / "run",
            "--weights", tmp_path / "start.pt", "--minutes", "1", "--max-steps", "2", "--device", "cpu"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("on 3 of your boxes kept aside, detection AP")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["boxes"] == 10 and report["check_boxes"] == 3 and (tmp_path / "run" / "model.pt").exists()
    assert report["steps"] == 2
    again = run_cli(*args)  # no silent overwrite of a finished run
    assert again.returncode == 1 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
