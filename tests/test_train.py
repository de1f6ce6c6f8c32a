import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_cellboxify.checkpoint import read_checkpoint
from napari_cellboxify.data.dataset import SyntheticSource
from napari_cellboxify.train import Trainer, lr_factor, read_loss_log

from conftest import tiny_config, write_synthetic_coco


def _source(config):
    return SyntheticSource(config, shape=(96, 96), n_cells=6)


def test_resume_gives_the_same_loss_curve_as_an_uninterrupted_run(tmp_path):
    config = tiny_config(steps=6)
    full = Trainer(config, _source(config), tmp_path / "full").fit()
    assert full.steps_done == 6 and not full.cancelled

    cancel = threading.Event()

    def stop_after_three(info):
        if info.step == 3:
            cancel.set()

    first = Trainer(config, _source(config), tmp_path / "split", callbacks=[stop_after_three], cancel=cancel).fit()
    assert first.cancelled and first.steps_done == 3
    second_trainer = Trainer(config, _source(config), tmp_path / "split")
    assert second_trainer.resume() and second_trainer.step == 3
    second = second_trainer.fit()
    assert second.steps_done == 6

    curve_full = [r["loss"] for r in read_loss_log(tmp_path / "full" / "loss_log.jsonl")]
    curve_split = [r["loss"] for r in read_loss_log(tmp_path / "split" / "loss_log.jsonl")]
    assert len(curve_full) == len(curve_split) == 6
    np.testing.assert_allclose(curve_split, curve_full, rtol=1e-5, atol=1e-6)


def test_a_resumed_fine_tuning_run_keeps_the_pairwise_terms_at_full_weight(tmp_path):
    # Fine-tuning (init weights) skips the pairwise warm-up; resuming it (no init any more) must not restart it.
    config = tiny_config(steps=4)
    Trainer(config, _source(config), tmp_path / "pre").fit()
    init = tmp_path / "pre" / "model.pt"
    config = tiny_config(steps=4)
    full = Trainer(config, _source(config), tmp_path / "full", init_weights=init)
    assert full.pairwise_warmup_steps == 0
    full.fit()

    cancel = threading.Event()
    stop = [lambda info: cancel.set() if info.step == 2 else None]
    Trainer(config, _source(config), tmp_path / "split", init_weights=init, callbacks=stop, cancel=cancel).fit()
    resumed = Trainer(config, _source(config), tmp_path / "split")
    assert resumed.resume() and resumed.step == 2 and resumed.pairwise_warmup_steps == 0
    resumed.fit()
    curve_full = [r["loss"] for r in read_loss_log(tmp_path / "full" / "loss_log.jsonl")]
    curve_split = [r["loss"] for r in read_loss_log(tmp_path / "split" / "loss_log.jsonl")]
    np.testing.assert_allclose(curve_split, curve_full, rtol=1e-5, atol=1e-6)


def _changed_by_training(config, out_dir) -> set[str]:
    """Names of the state entries that two training steps changed."""
    import torch

    trainer = Trainer(config, _source(config), out_dir)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_training_only_the_polygon_head_leaves_the_detector_as_it_was(tmp_path):
    config = tiny_config(steps=2)
    config.train.trainable = "polygon_head"
    changed = _changed_by_training(config, tmp_path / "run")
    assert changed and all(k.startswith("roi_heads.polygon_head.") for k in changed)


def test_training_only_the_polygon_head_steps_over_a_batch_without_cells(tmp_path):
    # A crop with no cell gives the mask branch nothing to fit; with the rest of the model frozen its zero loss
    # must still reach the branch's weights, or the backward pass has nothing to differentiate and stops the run.
    config = tiny_config(steps=2)
    config.train.trainable = "polygon_head"
    result = Trainer(config, SyntheticSource(config, shape=(96, 96), n_cells=0), tmp_path / "run").fit()
    assert result.steps_done == 2 and not result.cancelled


def test_training_the_heads_leaves_the_trunk_and_fpn_as_they_were(tmp_path):
    config = tiny_config(steps=2)
    config.train.trainable = "heads"
    changed = _changed_by_training(config, tmp_path / "run")
    assert all(k.startswith(("rpn.", "roi_heads.")) for k in changed)
    # All three heads learn.
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in changed} >= {"rpn.head", "roi_heads.box_head",
                                                                          "roi_heads.polygon_head"}


def test_training_the_detector_leaves_the_mask_branch_as_it_was(tmp_path):
    for trainable, moved in (("detector", "backbone."), ("box_heads", "roi_heads.box_")):
        config = tiny_config(steps=2)
        config.train.trainable = trainable
        changed = _changed_by_training(config, tmp_path / trainable)
        assert any(k.startswith(moved) for k in changed)
        assert not any(k.startswith("roi_heads.polygon_head.") for k in changed)
        if trainable == "box_heads":
            assert all(k.startswith(("rpn.", "roi_heads.box_")) for k in changed)
        # The mask branch's terms are not even computed.
        terms = read_loss_log(tmp_path / trainable / "loss_log.jsonl")[-1]
        assert "loss_classifier" in str(terms) and "loss_unary" not in str(terms)


def test_reset_polygon_head_keeps_the_loaded_detector_and_starts_a_fresh_mask_branch(tmp_path):
    import torch

    config = tiny_config(steps=3)
    Trainer(config, _source(config), tmp_path / "pre").fit()
    init = tmp_path / "pre" / "model.pt"
    loaded = read_checkpoint(init)["model"]
    fresh = Trainer(tiny_config(steps=3), _source(config), tmp_path / "fresh").model.state_dict()

    config = tiny_config(steps=3)
    config.train.reset_polygon_head = True
    state = Trainer(config, _source(config), tmp_path / "reset", init_weights=init).model.state_dict()
    head = [k for k in state if k.startswith("roi_heads.polygon_head.")]
    assert head and all(torch.equal(state[k], fresh[k]) for k in head)
    # The pre-training moved the head away from its initialisation, so the reset is visible...
    assert any(not torch.equal(loaded[k], fresh[k]) for k in head)
    # ...and everything else is the loaded detector.
    assert all(torch.equal(state[k], loaded[k].to(state[k].dtype)) for k in state if k not in head)


def test_cancel_keeps_the_last_finished_step(tmp_path):
    config = tiny_config(steps=50)
    cancel = threading.Event()
    result = Trainer(config, _source(config), tmp_path, callbacks=[lambda i: cancel.set() if i.step == 2 else None],
                     cancel=cancel).fit()
    assert result.cancelled and result.steps_done == 2
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert read_checkpoint(tmp_path / "model.pt")["kind"] == "weights"


def test_learning_rate_schedule():
    assert lr_factor(0, 100, (0.5,), warmup=10) == pytest.approx(0.001)
    assert lr_factor(10, 100, (0.5,), warmup=10) == 1.0
    assert lr_factor(60, 100, (0.5,), warmup=10) == pytest.approx(0.1)


def test_torchrun_two_cpu_processes_both_step_and_write_one_checkpoint(tmp_path):
    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=2, shape=(96, 96), n_cells=5)
    config = tiny_config(steps=3)
    config.train.checkpoint_every = 100
    config.train.device = "cpu"
    config_path = tmp_path / "tiny.json"
    config.save(config_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "napari_cellboxify.cli", "train", "--data", str(json_path), "--images", str(images_dir),
           "--out", str(out), "--config", str(config_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2 finished 3 steps" in result.stderr and "rank 1/2 finished 3 steps" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "last.pt", "loss_log.jsonl", "model.pt"]
    assert read_checkpoint(out / "last.pt")["step"] == 3


def _env():
    import os

    return dict(os.environ, OMP_NUM_THREADS="1")


def test_training_in_a_subprocess_streams_steps_and_returns_the_result(tmp_path):
    from napari_cellboxify.train_process import run_to_end, train_in_subprocess

    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=4)
    config = tiny_config(steps=3)
    infos, result = run_to_end(train_in_subprocess(config, json_path, images_dir, tmp_path / "run"))
    assert [i.step for i in infos] == [1, 2, 3]
    assert result.steps_done == 3 and not result.cancelled
    assert read_checkpoint(result.weights)["step"] == 3


def test_errors_in_the_training_subprocess_reach_the_caller(tmp_path):
    from napari_cellboxify.train_process import run_to_end, train_in_subprocess

    json_path, images_dir = write_synthetic_coco(tmp_path / "data", n_images=1, shape=(96, 96), n_cells=4)
    with pytest.raises(RuntimeError, match="weights file not found"):
        run_to_end(train_in_subprocess(tiny_config(steps=2), json_path, images_dir, tmp_path / "run",
                                       init_weights=tmp_path / "missing.pt"))


def test_trainer_ships_the_average_and_resumes_it_exactly(tmp_path):
    import torch

    config = tiny_config(steps=6)
    config.train.ema_decay = 0.9
    full = Trainer(config, _source(config), tmp_path / "full")
    full.fit()
    shipped = read_checkpoint(tmp_path / "full" / "model.pt")["model"]
    average, last = full.ema.module.state_dict(), full.model.state_dict()
    assert all(torch.equal(shipped[k], average[k]) for k in average)
    assert any(not torch.equal(average[k], last[k]) for k in last)
    assert full.inference_model is full.ema.module

    cancel = threading.Event()
    Trainer(config, _source(config), tmp_path / "split", cancel=cancel,
            callbacks=[lambda info: cancel.set() if info.step == 3 else None]).fit()
    resumed = Trainer(config, _source(config), tmp_path / "split")
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    again = read_checkpoint(tmp_path / "split" / "model.pt")["model"]
    for key in shipped:
        torch.testing.assert_close(again[key], shipped[key], rtol=1e-5, atol=1e-6)
