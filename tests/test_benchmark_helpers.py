"""The measuring parts of benchmarks/ that a wrong figure would come from."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_errors import image_errors, moved_toward_cells, rank_correlation  # noqa: E402
from bench_paired import paired_summary  # noqa: E402
from bench_partial_boxes import in_quarter, quarter_boxes  # noqa: E402


def test_image_errors_measure_recall_size_bias_and_best_overlaps():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    # one exact box on cell 1; on cell 2 a box 0.8 x its size (IoU 0.64), scored higher than an exact duplicate
    boxes = np.array([[0, 0, 10, 10], [20, 20, 36, 36], [20, 20, 40, 40], [60, 60, 70, 70]], np.float32)
    scores = np.array([0.9, 0.8, 0.3, 0.7])
    e = image_errors(boxes, scores, gt)
    assert e["cells"] == 2 and e["detections"] == 4
    assert e["recall0.5"] == e["recall0.75"] == e["recall0.9"] == 1.0  # some box fits each cell, at any score
    # the top-scored box on each cell: exact on cell 1, 0.8 on cell 2 -> median 0.9
    assert abs(e["width_ratio"] - 0.9) < 1e-6 and abs(e["height_ratio"] - 0.9) < 1e-6
    np.testing.assert_allclose(e["best_iou_per_detection"], [1.0, 0.64, 1.0, 0.0], atol=1e-6)
    empty = image_errors(np.zeros((0, 4)), np.zeros(0), gt)
    assert empty["recall0.5"] == 0.0 and len(empty["best_iou_per_detection"]) == 0


def test_rank_correlation_and_quarter_selection():
    assert rank_correlation(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == 1.0
    assert rank_correlation(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == -1.0
    boxes = np.array([[0, 0, 10, 10], [90, 0, 100, 10], [0, 60, 10, 70], [40, 20, 60, 40]], np.float32)
    np.testing.assert_array_equal(quarter_boxes(boxes, (100, 100)), boxes[[0]])  # centre (50, 30) is not < 50


def test_boxes_move_toward_the_cell_they_overlap_most_and_false_positives_stay():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    boxes = np.array([[2, 2, 12, 12], [22, 18, 38, 38], [60, 60, 70, 70]], np.float32)  # IoU 0.47, 0.80, 0
    half = moved_toward_cells(boxes, gt, 0.5)
    np.testing.assert_allclose(half, [[1, 1, 11, 11], [21, 19, 39, 39], [60, 60, 70, 70]])
    np.testing.assert_allclose(moved_toward_cells(boxes, gt, 1.0)[:2], gt)
    np.testing.assert_allclose(moved_toward_cells(boxes, gt, 0.0), boxes)
    assert moved_toward_cells(boxes, gt, 1.0, min_iou=0.5)[0].tolist() == [2, 2, 12, 12]  # below the overlap floor
    assert moved_toward_cells(np.zeros((0, 4)), gt, 1.0).shape == (0, 4)


def test_the_rest_of_an_image_is_every_other_cell_of_that_image_only():
    from bench_few_boxes import rest_of_image

    boxes = np.array([[0, 0, 10, 10], [60, 0, 70, 10], [45, 45, 56, 56]], np.float32)
    np.testing.assert_array_equal(in_quarter(boxes, (100, 100)), [True, False, False])  # (50.5, 50.5) is out
    data = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1}],
            "annotations": [{"id": i + 1, "image_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                            for i, b in enumerate(boxes.tolist())]
            + [{"id": 9, "image_id": 2, "bbox": [60, 0, 10, 10]}]}
    rest = rest_of_image(data, 1, (100, 100))
    assert [im["id"] for im in rest["images"]] == [1]
    assert [a["id"] for a in rest["annotations"]] == [2, 3]


def test_segment_timed_gives_each_image_its_prediction_and_time_at_the_benchmarks_score_threshold():
    from _results import segment_timed

    class Recorder:  # stands in for Predictor: segment_timed only calls segment_image
        thresholds = []

        def segment_image(self, image, score_threshold=None):
            self.thresholds.append(score_threshold)
            return float(image.sum())

    predictions, seconds = segment_timed(Recorder(), [np.ones((2, 3)), np.zeros((4, 4)), np.full((1, 1), 2.0)])
    assert predictions == [6.0, 0.0, 2.0]
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    assert Recorder.thresholds == [0.05, 0.05, 0.05]


def test_segment_timed_segments_each_image_at_its_own_zoom_and_restores_the_predictors():
    from _results import segment_timed

    class Recorder:
        image_scale = 1.5

        def segment_image(self, image, score_threshold=None):
            return self.image_scale

    recorder = Recorder()
    predictions, _ = segment_timed(recorder, [np.ones((2, 2))] * 3, zooms=[0.75, 1.25, 2.0])
    assert predictions == [0.75, 1.25, 2.0]
    assert recorder.image_scale == 1.5


def test_segm_ap_per_type_lists_each_cell_type_in_order_to_one_decimal():
    from _results import segm_ap_per_type

    metrics = {"per_cell_type": {"A172": {"segm_AP": 10.2413, "bbox_AP": 5.2}, "BT474": {"segm_AP": 20.75}}}
    assert segm_ap_per_type(metrics) == "A172 10.2, BT474 20.8"


def test_zooms_by_image_names_each_image_by_its_cell_type():
    from types import SimpleNamespace

    from _results import zooms_by_image

    entries = [SimpleNamespace(file_name="images/A172_Phase_C7_1_00d00h00m_1.tif"),
               SimpleNamespace(file_name="SKOV3_Phase_H4_1_00d04h00m_3.tif")]
    assert zooms_by_image(entries, [1.25, 0.75]) == "A172 1.25, SKOV3 0.75"


def test_paired_summary_counts_gains_and_bounds_the_mean_gain():
    base = np.array([10.0, 20, 30, 40, 50])
    s = paired_summary(base + [1, 2, 3, -1, 0], base)
    assert (s["n"], s["wins"], s["losses"]) == (5, 3, 1) and s["mean"] == 1.0
    assert -1 <= s["low"] < 1.0 < s["high"] <= 3  # resampled means stay within the differences' range
    assert abs(s["p"] - 0.625) < 1e-9  # two-sided sign test, 3 of 4 (the tie dropped)
    every = paired_summary(base + [1, 2, 1.5, 1, 2], base)
    assert every["wins"] == 5 and every["low"] >= 1.0 and abs(every["p"] - 0.0625) < 1e-9


def test_adapt_table_keeps_a_named_start_as_its_own_series_with_gains_over_the_default():
    from bench_adapt import series, table

    def point(ap, boxes, start="cells"):
        return {"segm_AP": ap, "segm_AP50": 2 * ap, "boxes": boxes, "wall_s": 290.0 if boxes else 0.0,
                "start": start, "kept": "start", "zoom": 1.5, "steps": 10, "measured": "2026-12-06, commit abc"}

    points = {"cort/0/0": point(4.7, 0), "cort/30/0": point(9.9, 30), "cort/30/1": point(9.9, 30),
              "cort@neurons/0/0": point(9.4, 0, "neurons"), "cort@neurons/30/0": point(11.4, 30, "neurons"),
              "cort@neurons/30/1": point(11.0, 30, "neurons")}
    assert series(points) == [("cort", "cort", "auto"), ("cort@neurons", "cort", "neurons")]
    rows = [line for line in table(points, 5.0).splitlines() if line.startswith("| cortical")]
    assert rows[2].startswith("| cortical neurons (Sartorius), from `neurons` | 0 | 9.4 | 9.4 (+4.7) |")
    assert "| 11.4 / 11.0 | 11.2 (+6.5) |" in rows[3]  # the gain is over the default weights' N = 0


def test_no_benchmark_scores_an_image_whose_labels_are_off_its_cells(tmp_path):
    import pytest
    from conftest import DATA
    from _label_defects import registered

    if not (DATA / "sartorius-2021" / "original" / "annotations.json").exists():
        pytest.skip(f"sartorius-2021 not found in {DATA} (see ../shared/data/README.md)")
    import json

    import bench_adapt
    import bench_domains

    assert not registered("afbcea22fc2a.png") and registered("f17f964687b3.png")
    cortical = bench_adapt.score_set("cort", tmp_path / "adapt")
    assert [entry.file_name for entry in cortical.images] == ["0_f17f964687b3.png"]
    path, _ = bench_domains.domain_coco("sartorius", tmp_path)
    names = [im["file_name"] for im in json.loads(path.read_text())["images"]]
    assert len(names) == 5 and not any("afbcea22fc2a" in name for name in names)


def test_scored_sets_merge_folders_renumbered_and_without_misregistered_images(tmp_path):
    import json

    from _scored_sets import merged_coco

    def folder(name, images):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({
            "images": [{"id": 7 + i, "file_name": f, "kind": k} for i, (f, k) in enumerate(images)],
            "annotations": [{"id": 3 + i, "image_id": 7 + i, "category_id": 2, "bbox": [0, 0, 1, 1]}
                            for i in range(len(images))]}))
        return path

    a = folder("a", [("x.png", "keep"), ("y.png", "drop")])
    b = folder("b", [("afbcea22fc2a.png", "keep"), ("z.png", "keep")])
    merged = merged_coco([(a, lambda e: e["kind"] == "keep"), (b, lambda e: True)], lambda k, n: f"{k}/{n}")
    assert [im["file_name"] for im in merged["images"]] == ["0/x.png", "1/z.png"]
    assert [im["id"] for im in merged["images"]] == [1, 2]
    assert [(ann["id"], ann["image_id"], ann["category_id"]) for ann in merged["annotations"]] == [(1, 1, 1), (2, 2, 1)]


def test_a_domain_point_is_measured_again_when_its_images_change(tmp_path):
    import json

    from bench_domains import point_key

    def key(names):
        path = tmp_path / "a.json"
        path.write_text(json.dumps({"images": [{"file_name": n} for n in names]}))
        return point_key("neurons", "1d45d5c28167", "sartorius", path)

    assert key(["a.png", "b.png"]) == key(["b.png", "a.png"])  # the order of the file does not matter
    assert key(["a.png", "b.png"]) != key(["a.png"])
    assert key(["a.png"]).startswith("neurons:1d45d5c28167:sartorius:")


def test_bench_speed_counts_the_raster_as_a_gpu_runs_it():
    # The row "raster as on a GPU" is only right if the context really switches the raster to edges in chunks.
    import torch

    from bench_speed import accelerator_raster, count_operations
    from napari_cellboxify.losses.rasterize import soft_rasterize_logits

    angles = torch.linspace(0, 6.28, 33)[:-1]
    polys = torch.stack([16 + 10 * torch.cos(angles), 16 + 8 * torch.sin(angles)], dim=-1)[None].repeat(4, 1, 1)
    out = {}

    def draw(key):
        out[key] = soft_rasterize_logits(polys, 32)

    by_edge = count_operations(lambda: draw("cpu"))
    with accelerator_raster():
        chunked = count_operations(lambda: draw("gpu"))
    assert chunked * 5 < by_edge
    assert torch.equal(out["cpu"], out["gpu"])
