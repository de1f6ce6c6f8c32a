"""fine_tune: the time budget and step cap, the never-worse rule, report.json, and learning on real nuclei."""

import json
import time

import numpy as np
import pytest
import torch

from napari_cellboxify import finetune
from napari_cellboxify.checkpoint import read_checkpoint, save_weights
from napari_cellboxify.data.synthetic import synthetic_cells
from napari_cellboxify.check_boxes import MIN_GAIN, Check, min_gain
from napari_cellboxify.finetune import Recipe, fine_tune
from napari_cellboxify.model import build_model

from conftest import DATA, tiny_config


def test_auto_starts_from_the_shipped_file_that_finds_the_training_boxes_best(tmp_path, monkeypatch):
    # Two "shipped" files, searched in SHIPPED's order: the default finds nothing at any zoom, the other all.
    files, _ = _two_shipped_files(tmp_path, monkeypatch, {"cells": 1.0, "nuclei": 90.0})
    # ... the default is ruled out by the training boxes, so no agreement is measured; on the kept-aside boxes
    # every model scores the same, which does not overrule the choice
    monkeypatch.setattr(finetune, "_agreement", lambda *args: pytest.fail("one file left: nothing to choose"))
    monkeypatch.setattr(finetune, "check_ap", lambda *args: Check([], [], 10.0))
    report = fine_tune(_synthetic_items(), tmp_path / "run", minutes=1, device="cpu", max_steps=2)
    assert report.start_choice == {"cells": 1.0, "nuclei": 90.0} and report.start_name == "nuclei"
    assert report.start_agreement == {}
    assert report.start_weights == str(files["nuclei"]) and report.default_ap == 10.0
    assert report.summary().startswith("started from nuclei (cells 1, nuclei 90 on your training boxes); on 3 of")
    assert report.kept == "start"
    assert read_checkpoint(tmp_path / "run" / "model.pt")["fine_tuned_from"] == "other.pt"


def _two_shipped_files(tmp_path, monkeypatch, fit_aps: dict[str, float]):
    """Two 'shipped' files (copies of one tiny model) whose zoom search on the training boxes finds ``fit_aps``;
    returns name -> file and name -> its loaded start model (filled as fine_tune loads them)."""
    import napari_cellboxify.weights as weights_module

    files = {"cells": _tiny_weights(tmp_path), "nuclei": tmp_path / "other.pt"}
    files["nuclei"].write_bytes(files["cells"].read_bytes())
    names = {path: name for name, path in files.items()}
    monkeypatch.setattr(weights_module, "resolve_weights", lambda name: files[name])
    monkeypatch.setattr(finetune, "SHIPPED", {name: weights_module.SHIPPED[name] for name in files})
    models, real = {}, finetune._start_point

    def start_point(path, *args):
        point = real(path, *args)
        point.fit.box_ap = {z: fit_aps[names[path]] for z in point.fit.box_ap}
        models[names[path]] = point.model
        return point

    monkeypatch.setattr(finetune, "_start_point", start_point)
    return files, models


def test_among_files_the_training_boxes_cannot_tell_apart_the_one_that_agrees_with_itself_starts(tmp_path,
                                                                                                    monkeypatch):
    files, _ = _two_shipped_files(tmp_path, monkeypatch, {"cells": 50.0, "nuclei": 45.0})  # within the noise
    agreement = {files["cells"]: 0.6, files["nuclei"]: 0.9}
    monkeypatch.setattr(finetune, "_agreement", lambda point, items: agreement[point.path])
    monkeypatch.setattr(finetune, "check_ap", lambda *args: Check([], [], 10.0))
    report = fine_tune(_synthetic_items(), tmp_path / "run", minutes=1, device="cpu", max_steps=2)
    assert report.start_agreement == {"cells": 0.6, "nuclei": 0.9} and report.start_name == "nuclei"
    assert "it agreed most with itself on your image" in report.summary()
    # measured for real: two copies of one model agree with themselves alike, and a tie goes to the default
    monkeypatch.undo()
    _two_shipped_files(tmp_path, monkeypatch, {"cells": 50.0, "nuclei": 45.0})
    monkeypatch.setattr(finetune, "check_ap", lambda *args: Check([], [], 10.0))
    report = fine_tune(_synthetic_items(), tmp_path / "tie", minutes=1, device="cpu", max_steps=2)
    assert set(report.start_agreement) == {"cells", "nuclei"}
    assert report.start_agreement["cells"] == report.start_agreement["nuclei"]
    assert report.start_name == "cells" and report.default_ap is None


def test_the_kept_aside_boxes_overrule_the_chosen_file_only_when_they_clearly_prefer_the_default(tmp_path,
                                                                                                monkeypatch):
    _, models = _two_shipped_files(tmp_path, monkeypatch, {"cells": 1.0, "nuclei": 90.0})
    items = _synthetic_items()
    box = items[0][2][:1]
    found, missed = Check([box], [(box, np.ones(1, np.float32))], 100.0), Check([box], [(box[:0], np.zeros(0))], 0.0)
    # the default finds the kept-aside box, the chosen file and its fine-tune do not
    monkeypatch.setattr(finetune, "check_ap", lambda model, *args: found if model is models["cells"] else missed)
    report = fine_tune(items, tmp_path / "run", minutes=1, device="cpu", max_steps=2)
    assert report.start_name == "nuclei" and report.kept == "default" and report.default_ap == 100.0
    assert report.reason.startswith("cells found your kept-aside boxes better than nuclei") and "kept cells" in report.reason
    assert read_checkpoint(tmp_path / "run" / "model.pt")["fine_tuned_from"] == "start.pt"


def _tiny_weights(tmp_path):
    config = tiny_config()
    config.model.box_score_thresh = 0.0
    torch.manual_seed(0)
    path = tmp_path / "start.pt"
    save_weights(path, build_model(config, load_pretrained=False), config)
    return path


def _synthetic_items(n_images=1):
    items = []
    for i in range(n_images):
        syn = synthetic_cells((160, 160), 14, seed=20 + i)
        items.append((f"syn{i}.tif", syn.image, syn.boxes_xyxy))
    return items


def test_fine_tune_honours_the_budget_and_writes_model_and_report(tmp_path):
    start = time.time()
    report = fine_tune(_synthetic_items(), tmp_path / "run", weights=_tiny_weights(tmp_path), minutes=0.25,
                       device="cpu", check_every_seconds=3)
    wall = time.time() - start
    assert wall <= 0.25 * 60 + 5  # the budget covers zoom search, checks and writing, with one step's slack
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["boxes"] == 14 and saved["check_boxes"] == 3 and saved["steps"] > 0
    assert saved["kept"] in ("start", "start, fitted zoom", "fine-tuned") and saved["reason"]
    assert saved["before_ap"] is not None and saved["checks"] and saved["checks"][-1]["step"] == saved["steps"]
    data = read_checkpoint(tmp_path / "run" / "model.pt")
    assert data["config"]["model"]["image_scale"] in (saved["start_zoom"], saved["fitted_zoom"])
    assert report.summary().startswith("on 3 of your boxes kept aside, detection AP")


def test_a_fine_tune_that_does_not_help_keeps_the_start_weights(tmp_path, monkeypatch):
    # Made to fail: the check boxes score the start weights 50 and anything trained 10.
    weights = _tiny_weights(tmp_path)

    def rigged(model, normalised, splits, zoom):
        # the Trainer's model is checked while it is in train mode
        return Check([], [], 10.0 if model.training else 50.0)

    monkeypatch.setattr(finetune, "check_ap", rigged)
    report = fine_tune(_synthetic_items(), tmp_path / "run", weights=weights, minutes=1, device="cpu",
                       recipe=Recipe("wild", "all", 1e-2), max_steps=3)
    assert report.steps == 3 and report.after_ap == 10.0 and report.before_ap == 50.0
    assert report.kept == "start" and "did not help" in report.summary()
    start, written = read_checkpoint(weights)["model"], read_checkpoint(tmp_path / "run" / "model.pt")["model"]
    assert all(torch.equal(start[k], written[k]) for k in start)
    forced = fine_tune(_synthetic_items(), tmp_path / "forced", weights=weights, minutes=1, device="cpu",
                       recipe=Recipe("wild", "all", 1e-2), force=True, max_steps=3)
    assert forced.kept == "fine-tuned"
    written = read_checkpoint(tmp_path / "forced" / "model.pt")["model"]
    assert not all(torch.equal(start[k], written[k]) for k in start)


def test_the_zoom_moves_only_when_the_training_boxes_prefer_it_beyond_their_noise(tmp_path, monkeypatch):
    from napari_cellboxify import zoom_fit

    items = _synthetic_items()
    monkeypatch.setattr(finetune, "check_ap", lambda *args: Check([], [], 10.0))
    for at_twice, moves in ((45.0, False), (70.0, True)):  # 40 at the weights' own zoom; 11 training boxes
        # finetune.ZOOM_FACTORS 0.5, 2/3, 5/6, 1, 7/6, 4/3, 5/3, 2: the best at twice the weights' zoom
        aps = iter([10.0, 20.0, 30.0, 40.0, 35.0, 35.0, 35.0, at_twice])
        monkeypatch.setattr(zoom_fit, "box_ap", lambda truth, found: next(aps))
        report = fine_tune(items, tmp_path / f"run{at_twice:g}", weights=_tiny_weights(tmp_path), minutes=1,
                           device="cpu", max_steps=1)
        n_train = report.boxes - report.check_boxes
        assert 45.0 - 40.0 < min_gain(n_train) < 70.0 - 40.0
        assert report.fitted_zoom == pytest.approx(2 * report.start_zoom if moves else report.start_zoom)


def test_blend_states_interpolates_weights_and_keeps_the_tuned_counters():
    start = {"w": torch.zeros(2, 2), "b": torch.ones(3), "n": torch.tensor(5)}
    tuned = {"w": torch.full((2, 2), 4.0), "b": torch.full((3,), 3.0), "n": torch.tensor(9)}
    half = finetune.blend_states(start, tuned, 0.5)
    assert torch.equal(half["w"], torch.full((2, 2), 2.0)) and torch.equal(half["b"], torch.full((3,), 2.0))
    assert half["n"].item() == 9
    assert torch.equal(finetune.blend_states(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(finetune.blend_states(start, tuned, 1.0)["w"], tuned["w"])


def test_the_written_weights_are_the_blend_or_as_trained_when_only_they_clear_the_bar(tmp_path, monkeypatch):
    weights = _tiny_weights(tmp_path)
    seen = []
    real = finetune.blend_states

    def spy(start, tuned, share):
        seen.append(({k: v.clone() for k, v in start.items()}, {k: v.clone() for k, v in tuned.items()}, share))
        return real(start, tuned, share)

    monkeypatch.setattr(finetune, "blend_states", spy)
    # trained weights 80 on the check boxes and 3 check boxes: a change must beat the start by 17.3. The blend
    # (checked after blend_states ran) scores `blended`. Clearing the bar, the blend is written however far below
    # the weights as trained it checks; short of it, the weights as trained when the start finds nothing there
    # (5 < 17.3), and the start when it does (50: the weights as trained overfit the trained image then)
    for start_ap, blended, kept, written_share in ((50.0, 72.0, "fine-tuned", finetune.BLEND),
                                                   (5.0, 15.0, "fine-tuned", 1.0), (50.0, 60.0, "start", None)):
        seen.clear()
        monkeypatch.setattr(finetune, "check_ap", lambda model, normalised, splits, zoom, b=blended, s=start_ap:
                            Check([], [], (b if seen else 80.0) if model.training else s))
        run = tmp_path / f"run{start_ap:g}_{blended:g}"
        report = fine_tune(_synthetic_items(), run, weights=weights, minutes=1, device="cpu",
                           recipe=Recipe("wild", "all", 1e-2), max_steps=3)
        (start, tuned, share), = seen
        assert share == finetune.BLEND and report.kept == kept, report.reason
        assert report.after_ap_unblended == 80.0 and report.after_ap_blended == blended
        shipped, written = read_checkpoint(weights)["model"], read_checkpoint(run / "model.pt")["model"]
        floats = [k for k in shipped if shipped[k].is_floating_point()]
        assert all(torch.allclose(start[k], shipped[k].float()) for k in floats)  # the file it began from
        assert not all(torch.equal(start[k], tuned[k]) for k in floats)  # ... and trained weights that moved
        if kept == "start":
            assert report.after_ap == blended and all(torch.equal(written[k], shipped[k]) for k in floats)
            continue
        assert report.blend == written_share and ("as trained" in report.reason) == (written_share == 1.0)
        assert report.after_ap == (blended if written_share < 1 else 80.0)
        assert all(torch.allclose(written[k], torch.lerp(start[k], tuned[k], written_share)) for k in floats)
    with pytest.raises(ValueError, match="blend"):
        fine_tune(_synthetic_items(), tmp_path / "bad", weights=weights, minutes=1, device="cpu", blend=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        fine_tune(_synthetic_items(), tmp_path / "bad", weights=weights, minutes=1, device="cpu", max_steps=0)


def test_on_few_check_boxes_a_change_must_gain_more(tmp_path, monkeypatch):
    # 3 check boxes: one box moves AP by a third, so +10 is noise (needs 30/sqrt(3) = 17); +30 is kept.
    assert min_gain(3) == pytest.approx(17.32, abs=0.01) and min_gain(400) == MIN_GAIN
    weights = _tiny_weights(tmp_path)
    for trained_ap, kept in ((60.0, "start"), (80.0, "fine-tuned")):
        monkeypatch.setattr(finetune, "check_ap", lambda model, normalised, splits, zoom, ap=trained_ap:
                            Check([], [], ap if model.training else 50.0))
        report = fine_tune(_synthetic_items(), tmp_path / f"run{trained_ap:g}", weights=weights, minutes=1,
                           device="cpu", recipe=Recipe("one", "box_heads", 1e-4), max_steps=2)
        assert report.check_boxes == 3 and report.kept == kept, report.reason
        if kept == "start":
            assert "did not help by 17 AP (needed on 3 boxes)" in report.reason


def test_recipes_race_and_the_best_checked_one_goes_on(tmp_path, monkeypatch):
    recipes = (Recipe("gentle", "box_heads", 1e-4), Recipe("bold", "all", 1e-3))
    monkeypatch.setattr(finetune, "RECIPES", recipes)
    report = fine_tune(_synthetic_items(), tmp_path / "run", weights=_tiny_weights(tmp_path), minutes=0.2,
                       device="cpu", check_every_seconds=2)
    assert set(report.race) == {"gentle", "bold"} and report.recipe["name"] in report.race
    assert {c["recipe"] for c in report.checks} == {"gentle", "bold"}
    loser = next(name for name in report.race if name != report.recipe["name"])
    # the loser stopped after its pilot: every check after it belongs to the winner
    last_loser = max(c["seconds"] for c in report.checks if c["recipe"] == loser)
    assert all(c["recipe"] == report.recipe["name"] for c in report.checks if c["seconds"] > last_loser)
    assert report.race[report.recipe["name"]] >= report.race[loser]


def test_too_few_boxes_train_unchecked_and_say_so(tmp_path):
    syn = synthetic_cells((128, 128), 5, seed=3)
    report = fine_tune([("a", syn.image, syn.boxes_xyxy)], tmp_path / "run", weights=_tiny_weights(tmp_path),
                       minutes=1, device="cpu", max_steps=2)
    assert report.check_boxes == 0 and report.kept == "fine-tuned" and "unchecked" in report.summary()
    assert report.steps == 2  # the step cap, not the budget, ended it


def test_no_boxes_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no boxes to fine-tune on"):
        fine_tune([("a", np.zeros((64, 64), np.uint8), np.zeros((0, 4)))], tmp_path / "run")


NUCLEI = DATA / "dsb2018" / "train"


def test_fine_tuning_on_30_boxed_nuclei_learns_to_find_the_kept_aside_ones(tmp_path):
    """The product's promise on a modality the shipped weights never saw: 30 boxes of fluorescence nuclei, a
    minute on the CPU, and detection on the boxes kept aside goes from nothing to useful, and what is written (the
    blend, or the weights as trained when only they do) clears the never-worse bar."""
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.weights import default_weights_path

    if not (NUCLEI / "annotations.json").exists():
        pytest.skip(f"DSB2018 data not found at {NUCLEI} (see ../shared/data/README.md)")
    try:
        weights = default_weights_path()
    except Exception as exc:
        pytest.skip(f"no shipped weights: {exc}")
    coco = load_coco(NUCLEI / "annotations.json", NUCLEI / "images")
    entry = next(e for e in coco.images if e.file_name.startswith("4d2cff9a"))
    image, boxes = read_image(entry.path), entry.boxes_xyxy
    h, w = image.shape[:2]
    nearest = np.argsort(np.maximum(boxes[:, 2] / w, boxes[:, 3] / h), kind="stable")[:30]  # one boxed corner
    # The detector recipe, which the race picks on nuclei, for a fixed 12 steps checked once at the end: a time
    # budget made the test depend on the machine's load (13 to 21 steps in a minute on one core), and on 6 check
    # boxes one step more or less moves either check by 20 AP. Measured 2026-12-07 (as trained / blended check AP):
    # 8 steps 16.9 / 4.0, 12 steps 38.8 / 27.1, 16 steps 22.3 / 47.4, 20 steps 33.6 / 42.3.
    report = fine_tune([(entry.file_name, image, boxes[nearest])], tmp_path / "run", weights=weights, minutes=5,
                       device="cpu", recipe=finetune.RECIPES[0], max_steps=12, check_every_seconds=10**9)
    print(report.summary(), f"steps {report.steps}, as trained {report.after_ap_unblended}")
    assert report.check_boxes == 6 and report.steps == 12
    assert report.before_ap < 5
    # Learning: the blend or the weights as trained find the kept-aside nuclei
    assert max(report.after_ap_unblended, report.after_ap_blended) > 20
    assert report.kept == "fine-tuned" and report.after_ap >= report.before_ap + min_gain(6)
