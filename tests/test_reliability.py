"""Interruptions, untrusted files and resources: nothing crashes, nothing half-written, nothing lost."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_cellboxify.checkpoint import read_checkpoint
from napari_cellboxify.data.coco import CocoError, load_coco
from napari_cellboxify.io_utils import atomic_write_with

from conftest import tiny_config, write_synthetic_coco

# ---- property-based: the COCO reader never fails with anything but a CocoError --------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
image_entry = st.fixed_dictionaries({"id": st.integers(0, 3) | st.text(max_size=3),
                                     "file_name": st.sampled_from(["a.tif", "../a.tif", "/etc/passwd", "", "b.tif"])})
annotation = st.fixed_dictionaries({"image_id": st.integers(0, 4),
                                    "bbox": st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 50),
                                                     min_size=0, max_size=5) | json_values})
coco_like = st.fixed_dictionaries({"images": st.lists(image_entry, max_size=3) | json_values,
                                   "annotations": st.lists(annotation | json_values, max_size=6) | json_values}) | json_values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=coco_like)
def test_coco_reader_only_ever_raises_coco_error(tmp_path, data):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "b.tif").write_bytes(b"")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    try:
        coco = load_coco(path, tmp_path)
    except CocoError:
        return
    for image in coco.images:
        assert image.path.is_relative_to(tmp_path.resolve())
        boxes = image.boxes_xyxy
        assert np.isfinite(boxes).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_huge_coco_file_is_read(tmp_path):
    """A 100,000-annotation file (LIVECell-sized) loads in reasonable time and memory."""
    (tmp_path / "a.tif").write_bytes(b"")
    anns = [{"id": i, "image_id": 1, "bbox": [i % 500, i % 300, 10, 12]} for i in range(100_000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.tif"}], "annotations": anns}))
    t0 = time.time()
    coco = load_coco(path, tmp_path)
    assert len(coco.images[0].boxes_xyxy) == 100_000
    assert time.time() - t0 < 60


# ---- interruptions ---------------------------------------------------------------------------------------------
def test_sigkill_during_training_leaves_the_last_good_checkpoint_and_resume_continues(tmp_path):
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=2, shape=(96, 96), n_cells=5)
    config = tiny_config(steps=400)
    config.train.checkpoint_every = 2
    config.save(tmp_path / "tiny.json")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_cellboxify.cli", "train", "--data", str(json_path), "--images",
           str(images_dir), "--out", str(run), "--config", str(tmp_path / "tiny.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until a few checkpoints exist, then kill mid-run
            if (run / "last.pt").exists() and read_checkpoint(run / "last.pt")["step"] >= 4:
                break
            time.sleep(0.2)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = read_checkpoint(run / "last.pt")["step"]  # loads: not half-written
    assert 4 <= step < 400
    read_checkpoint(run / "model.pt")
    result = subprocess.run(cmd + ["--resume", "--steps", str(step + 2)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed at step {step}" in result.stderr
    assert read_checkpoint(run / "last.pt")["step"] == step + 2
    # a SIGKILL mid-write can leave a temporary file (nothing can clean up after SIGKILL); the next run removes it
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "stale temporary files were not cleaned up"


def test_an_export_killed_midway_keeps_the_previous_file(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"previous good export")

    def dying_writer(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # what Ctrl-C or a crash looks like to the writer

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(target, dying_writer)
    assert target.read_bytes() == b"previous good export"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_sigkill_during_export_keeps_the_previous_file(tmp_path):
    target = tmp_path / "big.tif"
    target.write_bytes(b"previous good export")
    code = (
        "import numpy as np, sys\n"
        "from napari_cellboxify.export import write_label_tiff\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        f"    write_label_tiff({str(target)!r}, np.random.randint(0, 60000, (4000, 4000)).astype(np.uint16))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    import tifffile

    data = target.read_bytes()
    if data != b"previous good export":  # a finished export replaced it: it must then be a whole TIFF
        assert tifffile.imread(target).shape == (4000, 4000)


def test_predict_writes_nothing_outside_its_output_folder(tmp_path):
    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.model import build_model

    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(64, 64), n_cells=3)
    config = tiny_config()
    save_weights(tmp_path / "w.pt", build_model(config), config)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "napari_cellboxify.cli", "predict", str(images_dir), "--out",
                             str(out), "--weights", str(tmp_path / "w.pt"), "--format", "tiff,coco,csv"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p == out or p.is_relative_to(out) for p in new)


def _watched_predictor(monkeypatch, out_of_memory_above: int | None = None):
    """A tiny untrained Predictor and the (H, W) of every input its network is given; inputs wider than
    ``out_of_memory_above`` px raise the out-of-memory error a small GPU would."""
    import torch

    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    predictor = Predictor(build_model(tiny_config()).eval(), "cpu", score_threshold=0.0)
    real = predictor.model.forward
    calls = []

    def watched(images, targets=None, **settings):
        calls.append(tuple(images[0].shape[-2:]))
        if out_of_memory_above is not None and images[0].shape[-1] > out_of_memory_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(images, targets, **settings)

    monkeypatch.setattr(predictor.model, "forward", watched)
    return predictor, calls


def test_predictor_falls_back_to_tiles_when_out_of_memory(monkeypatch):
    predictor, calls = _watched_predictor(monkeypatch, out_of_memory_above=200)
    pred = predictor.segment_image(np.random.default_rng(0).random((300, 300)))
    assert pred.shape == (300, 300)
    assert calls[0] == (300, 300) and all(max(c) <= 200 for c in calls[1:])


def test_large_images_are_segmented_in_tiles_without_asking(monkeypatch):
    # A CPU has no out-of-memory error to fall back on (a 4,096² image whole needs ~9 GB): predict, evaluate
    # and the panel all tile an image with a side over LARGE_SIDE, as only the panel did before.
    from napari_cellboxify.predict import LARGE_SIDE

    predictor, calls = _watched_predictor(monkeypatch)
    noise = np.random.default_rng(0).random((48, LARGE_SIDE + 52))  # (a blank image is not segmented at all)
    assert predictor.segment(noise).shape == (48, LARGE_SIDE + 52)
    assert len(calls) == 3 and max(w for _, w in calls) <= LARGE_SIDE // 2
    calls.clear()
    predictor.segment(noise[:, :500])  # small: at once, as before
    assert calls == [(48, 500)]
    calls.clear()
    predictor.segment(noise[:, :500], tile=256, overlap=32)  # or in the tiles asked for
    assert len(calls) > 1 and max(w for _, w in calls) <= 256


def test_training_out_of_memory_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import torch

    from napari_cellboxify.data.dataset import SyntheticSource
    from napari_cellboxify.train import Trainer

    config = tiny_config(steps=5)
    trainer = Trainer(config, SyntheticSource(config, shape=(96, 96), n_cells=4), tmp_path)
    real = trainer._train_step

    def oom_at_third(batch, total):
        if trainer.step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, total)

    monkeypatch.setattr(trainer, "_train_step", oom_at_third)
    with pytest.raises(MemoryError, match="lower train.batch_size"):
        trainer.fit()
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_stale_temporaries_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    from napari_cellboxify.data.dataset import SyntheticSource
    from napari_cellboxify.train import Trainer

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    config = tiny_config(steps=1)
    Trainer(config, SyntheticSource(config, shape=(64, 64), n_cells=3), tmp_path)
    assert not (tmp_path / ".last.pt.abc123.tmp").exists()
    assert (tmp_path / "notes.tmp").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_published_files_get_the_usual_mode_not_mkstemps_owner_only(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = tmp_path / "new.txt"
    atomic_write_with(new, lambda p: p.write_text("x"))
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # what open() would have given it
    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    existing.chmod(0o640)
    atomic_write_with(existing, lambda p: p.write_text("new"))
    assert existing.stat().st_mode & 0o777 == 0o640  # an overwritten file keeps its mode
    assert existing.read_text() == "new"


def test_a_run_that_fails_on_its_first_image_names_it_and_leaves_no_weights(tmp_path):
    # A stack among the training images used to fail without naming the file, after writing a model.pt of the
    # untrained weights that looked like the run's result.
    import tifffile

    from napari_cellboxify.data.coco import CocoSource
    from napari_cellboxify.train import Trainer

    tifffile.imwrite(tmp_path / "movie.tif", np.zeros((3, 64, 64), np.uint8))
    (tmp_path / "boxes.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "movie.tif", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 20, 20], "category_id": 1}]}))
    config = tiny_config(steps=3)
    source = CocoSource(load_coco(tmp_path / "boxes.json", tmp_path), config)
    run = tmp_path / "run"
    with pytest.raises(CocoError, match=r"'movie.tif'.*2-D image"):
        Trainer(config, source, run).fit()
    assert not (run / "model.pt").exists() and not (run / "last.pt").exists()
    assert not run.exists()  # not even a config.json that would look like a run
