"""The napari plugin, driven as a user would, under a real X server (xvfb) with Mesa GL."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_cellboxify._napari.io import get_reader, write_labels_coco, write_labels_tiff, write_shapes_coco  # noqa: E402
from napari_cellboxify._napari.widget import MASKS_LAYER, CellBoxifyWidget  # noqa: E402
from napari_cellboxify.data.synthetic import synthetic_cells  # noqa: E402
from napari_cellboxify.geometry import labels_to_boxes  # noqa: E402
from napari_cellboxify.shapes import boxes_to_rectangles  # noqa: E402

from conftest import tiny_config, write_synthetic_coco  # noqa: E402


def _tiny():
    config = tiny_config()
    config.model.box_score_thresh = 0.0
    return config


def _load_tiny_weights(w, tmp_path):
    """Give the panel a tiny model from a weights file (fine-tuning adapts loaded weights)."""
    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.model import build_model

    config = _tiny()
    path = tmp_path / "tiny.pt"
    save_weights(path, build_model(config, load_pretrained=False), config)
    w.load_weights(path)


@pytest.fixture
def widget(make_napari_viewer, tmp_path, monkeypatch):
    # The panel starts without a model (the shipped default weights are tested in test_weights.py): these tests
    # fine-tune a tiny model, and must not depend on which weights the checkout ships.
    import napari_cellboxify.weights as weights

    monkeypatch.setattr(weights, "weights_dirs", lambda: [tmp_path / "no-weights"])
    viewer = make_napari_viewer()
    w = CellBoxifyWidget(viewer)
    w.project_edit.value = str(tmp_path / "project")
    w.export_edit.value = str(tmp_path / "export")
    viewer.window.add_dock_widget(w)
    return viewer, w


def _wait_training(qtbot, w, timeout=300_000):
    qtbot.waitUntil(lambda: w.train_worker is None, timeout=timeout)


def _segment_my_boxes(w, qtbot):
    """Click *Segment my boxes* and wait for its worker (the viewer stays live meanwhile)."""
    w.segment_my_boxes()
    assert not w.segment_boxes_button.enabled  # returned at once, the work is in a worker thread
    qtbot.waitUntil(lambda: w.segment_boxes_button.enabled, timeout=60_000)


def test_full_flow_draw_finetune_segment_correct_export(widget, qtbot, tmp_path):
    viewer, w = widget
    syn = synthetic_cells((128, 128), 8, seed=3)
    viewer.add_image(syn.image, name="cells")
    boxes = w.new_boxes_layer()
    boxes.add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    _load_tiny_weights(w, tmp_path)
    w.minutes_spin.value = 0.3  # steps even on a busy CPU: the child process alone takes seconds to start
    w.zoom_spin.value = 1.25  # the zoom search starts here

    w.fine_tune()
    _wait_training(qtbot, w)
    assert w.predictor is not None and w.weights_path == tmp_path / "project" / "run" / "model.pt"
    report = json.loads((tmp_path / "project" / "run" / "report.json").read_text())
    assert w.zoom_spin.value == (report["fitted_zoom"] if report["kept"] != "start" else 1.25)
    assert (tmp_path / "project" / "annotations.json").exists()
    assert len(w.loss_plot.values) >= report["steps"] > 0  # every step shown, of each recipe that raced
    # the before/after on the kept-aside boxes, in words
    assert w.loss_label.value.startswith(f"on {report['check_boxes']} of your boxes kept aside, detection AP")

    _segment_my_boxes(w, qtbot)
    masks = viewer.layers[MASKS_LAYER]
    ids = boxes.features["cell_id"].tolist()
    assert sorted(np.unique(masks.data)[1:].tolist()) == sorted(ids)[: len(np.unique(masks.data)) - 1] or \
        set(np.unique(masks.data)[1:]) <= set(ids)
    first = masks.data.copy()
    _segment_my_boxes(w, qtbot)  # re-running keeps the same labels
    assert np.array_equal(first, masks.data)

    w.predictions_to_boxes()
    assert len(boxes.data) == len(np.unique(first)) - 1

    w.export()
    qtbot.waitUntil(lambda: w.export_button.enabled, timeout=60_000)  # written in a worker
    export = tmp_path / "export"
    assert np.array_equal(tifffile.imread(export / "cells_labels.tif"), first)
    coco = json.loads((export / "cells_coco.json").read_text())
    assert len(coco["annotations"]) == len(np.unique(first)) - 1
    assert (export / "cells_cells.csv").read_text().startswith("label,area")


def test_fine_tuning_a_partly_boxed_image_says_where_it_trains(widget, qtbot, tmp_path):
    viewer, w = widget
    syn = synthetic_cells((192, 192), 14, seed=6)
    viewer.add_image(syn.image, name="cells")
    corner = syn.boxes_xyxy[(syn.boxes_xyxy[:, 2] < 90) & (syn.boxes_xyxy[:, 3] < 90)]
    assert len(corner)
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(corner))
    _load_tiny_weights(w, tmp_path)
    w.minutes_spin.value = 0.1
    w.fine_tune()
    assert "inside the rectangle around your boxes" in w.loss_label.value
    _wait_training(qtbot, w)
    assert w.predictor is not None


@pytest.mark.parametrize("loaded", ["default", "chosen", "own"])
def test_fine_tune_from_the_default_weights_lets_the_boxes_choose_the_start(widget, tmp_path, monkeypatch, loaded):
    # From the default weights the fine-tune searches every shipped file (nuclei boxed on `cells` start from
    # `nuclei`); from a file the user chose (`neurons` by name, or an earlier fine-tune) it goes on from that
    # file at the panel's zoom.
    viewer, w = widget
    syn = synthetic_cells((96, 96), 6, seed=2)
    viewer.add_image(syn.image, name="cells")
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    _untrained(w)
    w.weights_path = Path("/somewhere") / {"default": "cellboxify_livecell_boxes.pt",
                                           "chosen": "cellboxify_neurons_boxes.pt", "own": "model.pt"}[loaded]
    w.zoom_spin.value = 1.25
    asked = []

    def child(ann_path, images_dir, run_dir, cancel, **settings):
        asked.append(settings)
        return iter([None])  # one step shown: the fake worker below stops there

    monkeypatch.setattr("napari_cellboxify._napari.widget.fine_tune_in_subprocess", child)
    monkeypatch.setattr("napari_cellboxify._napari.widget.create_worker",
                        lambda work, **kw: type("W", (), {"start": lambda self: next(work(), None),
                                                          **{sig: type("S", (), {"connect": lambda *a, **k: None})()
                                                             for sig in ("yielded", "returned", "errored", "finished",
                                                                         "aborted")}})())
    w.project_edit.value = str(tmp_path / "project")
    w.fine_tune()
    expected = ({"weights": "auto", "zoom": None} if loaded == "default"
                else {"weights": w.weights_path, "zoom": 1.25})
    assert asked and {k: asked[0][k] for k in expected} == expected


def test_fit_zoom_to_my_boxes_sets_the_zoom_from_them(widget, qtbot, livecell_dir, monkeypatch):
    # A172 cells on this val image are larger than in train: boxing them moves the default weights' zoom
    # (1.5) down (benchmarks/RESULTS.md "Zoom sensitivity"). Its top half, for time: bbox AP 14.5 at 0.75, 5.3 at
    # 1.5 (measured 2026-12-07).
    from pathlib import Path

    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image

    viewer, w = widget
    val = load_coco(livecell_dir / "val" / "annotations.json", livecell_dir / "val" / "images")
    entry = next(e for e in val.images if e.file_name.startswith("A172"))
    boxes = entry.boxes_xyxy[entry.boxes_xyxy[:, 3] <= 260]
    viewer.add_image(read_image(entry.path)[:260], name="A172")
    shipped = Path(__file__).resolve().parents[1] / "weights" / "cellboxify_livecell_boxes.pt"
    if not shipped.exists():
        pytest.skip("no default weights in weights/")
    w.load_weights(shipped)
    assert w.zoom_spin.value == 1.5
    shown = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_error", lambda msg: shown.append(msg))
    w.new_boxes_layer()
    w.fit_zoom()  # no boxes yet: a message, not a traceback
    assert len(shown) == 1 and "draw boxes" in shown[0]
    w.boxes_layer().add_rectangles(boxes_to_rectangles(boxes))
    w.fit_zoom()
    assert not w.segment_image_button.enabled  # busy while it runs off the event loop
    qtbot.waitUntil(lambda: w.fit_zoom_button.enabled, timeout=180_000)
    assert w.zoom_spin.value < 1.5 and len(shown) == 1  # and no new error


def _training_underway(widget, qtbot, tmp_path, seen: int) -> None:
    """Box a synthetic image, start a long fine-tune and wait until ``seen`` steps have been shown."""
    viewer, w = widget
    syn = synthetic_cells((128, 128), 8, seed=4)
    viewer.add_image(syn.image, name="cells")
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    _load_tiny_weights(w, tmp_path)
    w.minutes_spin.value = 30
    w.fine_tune()
    qtbot.waitUntil(lambda: len(w.loss_plot.values) >= seen, timeout=120_000)


def _steps_trained(run_dir: Path) -> int:
    """Steps in the checkpoints of a fine-tune's recipes (each recipe that raced trains in run/train_NAME)."""
    from napari_cellboxify.checkpoint import read_checkpoint

    return sum(read_checkpoint(path)["step"] for path in run_dir.glob("train*/last.pt"))


def test_cancel_during_fine_tuning_still_checks_and_writes_the_result(widget, qtbot, tmp_path):
    viewer, w = widget
    _training_underway(widget, qtbot, tmp_path, seen=2)
    w.cancel_training()
    _wait_training(qtbot, w)
    from napari_cellboxify.checkpoint import read_checkpoint

    report = json.loads((tmp_path / "project" / "run" / "report.json").read_text())
    step = read_checkpoint(tmp_path / "project" / "run" / f"train_{report['recipe']['name']}" / "last.pt")["step"]
    assert report["cancelled"] and 2 <= report["steps"] == step < 1000 and report["wall_seconds"] < 600
    assert w.weights_path == tmp_path / "project" / "run" / "model.pt"


def test_quitting_napari_during_training_stops_it_and_keeps_its_steps(widget, qtbot, tmp_path):
    # What napari does on quit: ask every worker to quit, then wait for the thread pool. The training child must
    # be stopped and save its steps (before, it was left running and killed at exit, losing all since the last
    # periodic checkpoint: here none, with a checkpoint every 100 steps).
    import multiprocessing as mp

    from qtpy.QtCore import QThreadPool

    viewer, w = widget
    _training_underway(widget, qtbot, tmp_path, seen=3)
    w.train_worker.quit()
    assert QThreadPool.globalInstance().waitForDone(120_000)
    assert not mp.active_children()
    assert 3 <= _steps_trained(tmp_path / "project" / "run") < 1000
    assert (tmp_path / "project" / "run" / "model.pt").exists()


def test_closing_the_viewer_during_training_stops_it_and_keeps_its_steps(widget, qtbot, tmp_path):
    # napari as a library (a notebook, a script) closes a viewer without quitting the app: napari then cancels
    # the tasks it lists for that window, our worker among them, and the child must stop and save as on quit.
    import multiprocessing as mp

    viewer, w = widget
    _training_underway(widget, qtbot, tmp_path, seen=3)
    viewer.close()
    qtbot.waitUntil(lambda: not mp.active_children(), timeout=60_000)
    assert 3 <= _steps_trained(tmp_path / "project" / "run") < 1000
    assert (tmp_path / "project" / "run" / "model.pt").exists()


def test_viewer_stays_responsive_while_training(widget, qtbot, tmp_path):
    """Timer jitter of the Qt event loop while a fine-tune runs in the worker."""
    import time

    from qtpy.QtCore import QTimer

    viewer, w = widget
    syn = synthetic_cells((128, 128), 8, seed=5)
    viewer.add_image(syn.image, name="cells")
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    _load_tiny_weights(w, tmp_path)
    w.minutes_spin.value = 0.1
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    w.fine_tune()
    _wait_training(qtbot, w)
    timer.stop()
    gaps = np.diff(ticks)
    assert len(gaps) > 10
    assert gaps.max() < 1.0  # the event loop was never blocked for a whole second (benchmark: ~ms)


def test_errors_become_notifications_not_tracebacks(widget, monkeypatch):
    viewer, w = widget
    shown = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_error", lambda msg: shown.append(msg))
    w.segment_my_boxes()  # no model, no image
    w.fine_tune()  # no image
    viewer.add_image(np.zeros((64, 64), np.uint8), name="blank")
    w.new_boxes_layer()
    w.fine_tune()  # no boxes
    w.boxes_layer().add_rectangles(boxes_to_rectangles(np.array([[4, 4, 20, 20]], np.float32)))
    w.fine_tune()  # no weights
    assert len(shown) == 4
    assert "no model loaded" in shown[0] and "draw some boxes" in shown[2] and "no weights loaded" in shown[3]


@pytest.mark.parametrize("kind", ["uint16", "rgb", "stack"])
def test_segment_image_on_16bit_rgb_and_stacks(widget, qtbot, kind, monkeypatch):
    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    viewer, w = widget
    syn = synthetic_cells((96, 96), 5, seed=6, bit_depth=16 if kind == "uint16" else 8)
    data = {"uint16": syn.image, "rgb": np.stack([syn.image] * 3, -1), "stack": np.stack([syn.image] * 3)}[kind]
    layer = viewer.add_image(data, name="img", rgb=kind == "rgb")
    w.predictor = Predictor(build_model(_tiny()).eval(), "cpu")
    w.score_spin.value = 0.0
    w.max_dets_spin.value = 20
    if kind == "stack":
        viewer.dims.set_current_step(0, 1)
    w.zoom_spin.value = 1.5
    w.tta_combo.value = "flips" if kind == "uint16" else "off"
    seen, transform = [], w.predictor.model.transform
    real = transform.forward
    transform.forward = lambda images, targets=None, scale=None: (seen.append(scale), real(images, targets, scale))[1]
    import napari_cellboxify.predict as predict_module

    tta_used, real_tta = [], predict_module.segment_with_tta
    monkeypatch.setattr(predict_module, "segment_with_tta", lambda *a, **k: (tta_used.append(1), real_tta(*a, **k))[1])
    w.segment_image()
    qtbot.waitUntil(lambda: w.segment_image_button.enabled, timeout=60_000)
    # the panel's zoom and test-time augmentation reached the network, and the loaded model was left as it was
    assert set(seen) == {1.5} and transform.image_scale == 1.0
    assert bool(tta_used) == (kind == "uint16")
    masks = viewer.layers[MASKS_LAYER].data
    assert masks.shape == (layer.data.shape[:-1] if kind == "rgb" else layer.data.shape)
    if kind == "stack":
        assert masks[1].max() > 0 and masks[0].max() == 0
    else:
        assert masks.max() > 0


def test_a_2d_boxes_layer_over_a_stack_is_the_slice_shown(widget, qtbot, monkeypatch):
    # napari shows a 2-D Shapes layer (from a script, or opened from a 2-D file) on every slice of a stack. Its
    # boxes were skipped as "drawn on no particular slice", and Predictions -> boxes into it failed with napari's
    # dimension error; they are now the boxes of the slice shown.
    viewer, w = widget
    _untrained(w)
    infos = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_info", lambda msg: infos.append(msg))
    syn = synthetic_cells((96, 96), 5, seed=4)
    image = viewer.add_image(np.stack([syn.image] * 3), name="movie")
    mine = viewer.add_shapes(boxes_to_rectangles(syn.boxes_xyxy), shape_type="rectangle", name="mine")
    viewer.dims.set_current_step(0, 2)
    converted = w.read_boxes(image, mine)
    assert list(converted.boxes) == [(2,)]
    np.testing.assert_allclose(converted.boxes[(2,)], syn.boxes_xyxy, atol=1e-4)
    assert "slice shown (2)" in infos[-1]

    w.boxes_combo.value = viewer.layers["mine"]
    _segment_my_boxes(w, qtbot)
    masks = viewer.layers[MASKS_LAYER].data
    assert len(np.unique(masks[2])) - 1 == len(syn.boxes_xyxy) and masks[:2].max() == 0

    w.predictions_to_boxes()  # the layer stays 2-D: its boxes are replaced by this slice's masks' boxes
    assert mine.ndim == 2 and len(mine.data) == len(syn.boxes_xyxy)
    np.testing.assert_allclose(w.read_boxes(image, mine).boxes[(2,)], labels_to_boxes(masks[2])[1], atol=1e-4)


def test_bad_shapes_are_handled_with_notices(widget, qtbot, monkeypatch):
    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    viewer, w = widget
    infos = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_info", lambda msg: infos.append(msg))
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    w.predictor = Predictor(build_model(_tiny()).eval(), "cpu")
    layer = w.new_boxes_layer()
    layer.add_ellipses(np.array([[10, 10], [20, 30]]))
    layer.add_rectangles(np.array([[50, 50], [90, 90]]))  # partly outside
    layer.add_rectangles(np.array([[5, 5], [5, 20]]))  # zero area
    _segment_my_boxes(w, qtbot)
    text = " ".join(infos)
    assert "ellipse" in text and "clipped" in text and "zero-area" in text
    assert viewer.layers[MASKS_LAYER].data.max() > 0


def test_boxes_over_a_calibrated_image_are_read_on_its_pixels(widget, qtbot):
    # An image in µm (0.5 µm per pixel, offset), as readers of microscopy formats open it: a Shapes layer in µm
    # (napari's own button or a script) and the panel's own boxes layer must both be read on the image's pixels,
    # and masks turned back into boxes must land on the same cells.
    viewer, w = widget
    syn = synthetic_cells((96, 96), 5, seed=4)
    scale, offset = np.array([0.5, 0.5]), np.array([10.0, 20.0])
    image = viewer.add_image(syn.image, name="cells", scale=scale, translate=offset, units=("um", "um"))
    in_um = [r * scale + offset for r in boxes_to_rectangles(syn.boxes_xyxy)]
    mine = viewer.add_shapes(in_um, shape_type="rectangle", name="mine")
    np.testing.assert_allclose(w.read_boxes(image, mine).boxes[()], syn.boxes_xyxy, atol=1e-4)
    own = w.new_boxes_layer()  # drawing with the mouse puts world positions in its data through its scale
    own.add_rectangles([(r - offset) / own.scale for r in in_um])
    np.testing.assert_allclose(w.read_boxes(image, own).boxes[()], syn.boxes_xyxy, atol=1e-4)

    viewer.add_labels(syn.labels, name="truth", scale=scale, translate=offset)
    w.labels_combo.value = viewer.layers["truth"]
    w.boxes_combo.value = viewer.layers["mine"]
    w.predictions_to_boxes()
    np.testing.assert_allclose(w.read_boxes(image, mine).boxes[()], labels_to_boxes(syn.labels)[1], atol=1e-4)
    assert np.allclose(mine.data[0].min(0), in_um[0].min(0), atol=1.0)  # still on the cell, in µm

    w.export_coco.value = False
    w.export()  # the measurements in µm too, at the positions napari shows; the label TIFF carries the size
    qtbot.waitUntil(lambda: w.export_button.enabled, timeout=60_000)
    from napari_cellboxify.data.images import read_pixel_size

    assert read_pixel_size(Path(w.export_edit.value) / "cells_labels.tif") == pytest.approx((0.5, 0.5))
    header, first = (line.split(",") for line in (Path(w.export_edit.value) / "cells_cells.csv").read_text().splitlines()[:2])
    row = dict(zip(header, map(float, first)))
    assert row["area_um2"] == pytest.approx(row["area"] * 0.25, abs=1e-3)  # the CSV keeps 4 decimals
    assert row["perimeter_um"] == pytest.approx(row["perimeter"] / 2, abs=1e-3)
    assert row["centroid_y_um"] == pytest.approx(10 + row["centroid_y"] / 2, abs=1e-3)

    mine.rotate = 30
    with pytest.raises(RuntimeError, match="rotated"):
        w.read_boxes(image, mine)


def _untrained(w):
    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    w.predictor = Predictor(build_model(_tiny()).eval(), "cpu")


def test_multiscale_image_is_segmented_at_full_resolution(widget, qtbot):
    # A pyramid (large microscopy formats open this way) was read at its coarsest level and failed to fit the
    # masks layer, with a traceback from the event loop.
    viewer, w = widget
    _untrained(w)
    syn = synthetic_cells((128, 128), 5, seed=4)
    viewer.add_image([syn.image, syn.image[::2, ::2]], name="pyramid", multiscale=True)
    w.score_spin.value = 0.0
    w.segment_image()
    qtbot.waitUntil(lambda: w.segment_image_button.enabled, timeout=60_000)
    assert viewer.layers[MASKS_LAYER].data.shape == (128, 128) and viewer.layers[MASKS_LAYER].data.max() > 0
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    _segment_my_boxes(w, qtbot)
    masks = viewer.layers[MASKS_LAYER].data
    assert len(np.unique(masks[masks > 0])) == len(syn.boxes_xyxy)


def test_worker_errors_and_bad_folders_become_notifications(widget, qtbot, tmp_path, monkeypatch):
    # pytest-qt fails a test on any exception that reaches the Qt event loop: napari shows those as tracebacks.
    viewer, w = widget
    _untrained(w)
    errors = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_error", lambda msg: errors.append(msg))
    syn = synthetic_cells((96, 96), 5, seed=4)
    viewer.add_image(syn.image, name="img")

    def fail(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(w.predictor, "segment_image", fail)
    w.segment_image()
    qtbot.waitUntil(lambda: w.segment_image_button.enabled, timeout=60_000)
    assert errors[-1] == "CellBoxify: segmentation failed: no room"

    viewer.add_labels(np.zeros((50, 50), np.uint16), name="other")
    w.labels_combo.value = viewer.layers["other"]
    w.export()
    assert "'other' is 50x50 and the image 'img' is 96x96" in errors[-1]
    viewer.add_labels(syn.labels, name="masks")
    w.labels_combo.value = viewer.layers["masks"]
    (tmp_path / "a_file").write_text("")
    w.export_edit.value = str(tmp_path / "a_file")
    w.export()
    assert "export folder" in errors[-1] and "is a file" in errors[-1]
    w.new_boxes_layer().add_rectangles(boxes_to_rectangles(syn.boxes_xyxy))
    w.project_edit.value = str(tmp_path / "a_file" / "project")
    w.fine_tune()
    assert "project folder" in errors[-1] and "a_file is a file" in errors[-1] and w.train_worker is None


def test_reader_and_writers_round_trip(tmp_path):
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=5)
    reader = get_reader(str(json_path))
    assert reader is not None
    layers = reader(str(json_path))
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "shapes", "labels"]
    labels = layers[2][0]
    assert len(np.unique(labels)) - 1 == 5
    assert len(layers[1][0]) == 5

    (out,) = write_labels_tiff(str(tmp_path / "l.tif"), labels, {})
    assert np.array_equal(tifffile.imread(out), labels)
    (coco_path,) = write_labels_coco(str(tmp_path / "out" / "labels.json"), labels, {"name": "synthetic_0"})
    (tmp_path / "out" / "images").mkdir()
    tifffile.imwrite(tmp_path / "out" / "images" / "synthetic_0.tif", layers[0][0])
    again = get_reader(coco_path)(coco_path)
    assert np.array_equal(again[2][0] > 0, labels > 0)

    (boxes_path,) = write_shapes_coco(str(tmp_path / "boxes.json"), layers[1][0], {"name": "synthetic_0",
                                                                                    "shape_type": ["rectangle"] * 5})
    coco = json.loads(open(boxes_path).read())
    original = json.loads(json_path.read_text())
    np.testing.assert_allclose(sorted(a["bbox"] for a in coco["annotations"]),
                               sorted(a["bbox"] for a in original["annotations"]), atol=1e-4)

    # a (T, H, W) stack: masks and boxes saved from napari name the same images, as the panel's export does
    stack = np.stack([labels, labels])
    rects = [np.hstack([np.full((4, 1), 1.0), r]) for r in layers[1][0]]
    (masks_path,) = write_labels_coco(str(tmp_path / "stack_masks.json"), stack, {"name": "movie"})
    (boxes_path,) = write_shapes_coco(str(tmp_path / "stack_boxes.json"), rects, {"name": "movie"})
    masks_names = [im["file_name"] for im in json.loads(open(masks_path).read())["images"]]
    boxes_names = [im["file_name"] for im in json.loads(open(boxes_path).read())["images"]]
    assert masks_names == ["movie_0.tif", "movie_1.tif"] and boxes_names == ["movie_1.tif"]


def test_reader_declines_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    assert get_reader(str(path)) is None
    assert get_reader(str(tmp_path / "image.tif")) is None


def test_the_panel_offers_the_shipped_weights_by_name(widget):
    _, w = widget
    assert list(w.model_combo.choices) == ["cells", "nuclei", "neurons"]
    w.model_combo.value = "nuclei"  # the fixture ships no weights: choosing says so instead of loading
    from napari_cellboxify.weights import WeightsError

    with pytest.raises(WeightsError, match="'nuclei' weights"):
        w._load_chosen_model()


def test_choose_for_this_image_loads_the_shipped_model_that_knows_its_cells(widget, qtbot, monkeypatch):
    # A small fluorescence-nuclei image of dsb2018/val: `nuclei`, not the default `cells`, is loaded.
    import napari_cellboxify.weights as weights
    from napari_cellboxify.data.images import read_image

    from conftest import DATA

    viewer, w = widget
    shipped = Path(__file__).resolve().parents[1] / "weights"
    dsb = DATA / "dsb2018" / "val"
    if not all((shipped / file).exists() for file, _ in weights.SHIPPED.values()):
        pytest.skip("the shipped weights are not all in weights/")
    if not (dsb / "annotations.json").exists():
        pytest.skip(f"DSB2018 val not found at {dsb} (see ../shared/data/README.md)")
    monkeypatch.setattr(weights, "weights_dirs", lambda: [shipped])
    entry = next(im for im in json.loads((dsb / "annotations.json").read_text())["images"]
                 if im["modality"] == "fluorescence_grayscale" and im["width"] <= 360)
    shown = []
    monkeypatch.setattr("napari_cellboxify._napari.widget.show_error", lambda msg: shown.append(msg))
    w.choose_model()  # no image yet: a message, not a traceback
    assert len(shown) == 1 and "image layer" in shown[0]
    viewer.add_image(read_image(dsb / "images" / entry["file_name"]), name="nuclei")
    w.choose_model()
    assert not w.choose_model_button.enabled  # busy while it runs off the event loop
    qtbot.waitUntil(lambda: w.choose_model_button.enabled, timeout=120_000)
    assert w.model_combo.value == "nuclei" and w.weights_path.name == weights.SHIPPED["nuclei"][0]
    assert len(shown) == 1
