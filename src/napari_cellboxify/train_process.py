"""Run the Trainer, or a whole fine-tune (finetune.py), in a separate process and stream its progress back (GUIs).

A training thread inside napari shares the interpreter lock with the event loop: pickling checkpoints, building
the model and the first imports hold it for hundreds of milliseconds (measured), and the viewer stalls. A
child process shares nothing, so the viewer's event loop never waits for training; the parent only polls a
queue. The child is started with "spawn" (forking a process that runs Qt is unsafe) and is a daemon, so it never
outlives napari; closing the generator (the panel does when napari quits) stops it after its current step, and it
saves its weights and checkpoint (written atomically) as a cancelled run does.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import threading
from pathlib import Path
from typing import Any, Iterator

from .config import CellBoxifyConfig
from .train import StepInfo, TrainResult


def _child(job: str, kwargs: dict, out_q, cancel) -> None:
    try:
        import os

        if hasattr(os, "nice"):
            os.nice(10)  # background work: on a laptop's few cores the viewer must win every contest
        out_q.put(("done", _JOBS[job](out_q=out_q, cancel=cancel, **kwargs)))
    except BaseException as exc:  # everything reaches the parent as one message
        out_q.put(("error", f"{type(exc).__name__}: {exc}"))


def _train(config_dict: dict, ann_path: str, images_dir: str, run_dir: str, init: str | None, out_q, cancel):
    from .data.coco import CocoSource, load_coco
    from .train import Trainer

    config = CellBoxifyConfig.from_dict(config_dict)
    source = CocoSource(load_coco(ann_path, images_dir), config)
    trainer = Trainer(config, source, run_dir, init_weights=init, cancel=cancel)
    for info in trainer.iter_steps():
        out_q.put(("step", info))
    return trainer.result


def _fine_tune(ann_path: str, images_dir: str, run_dir: str, out_q, cancel, **settings):
    from .finetune import boxes_from_coco, fine_tune

    return fine_tune(boxes_from_coco(ann_path, images_dir), run_dir, on_step=lambda info: out_q.put(("step", info)),
                     cancel=cancel, **settings)


_JOBS = {"train": _train, "fine-tune": _fine_tune}


def train_in_subprocess(
    config: CellBoxifyConfig,
    annotations: str | Path,
    images_dir: str | Path,
    run_dir: str | Path,
    init_weights: str | Path | None = None,
    cancel: threading.Event | None = None,
    poll_seconds: float = 0.1,
) -> Iterator[StepInfo]:
    """Yield a ``StepInfo`` per step from a training child process; the generator's return value (and
    ``StopIteration.value``) is the ``TrainResult``. Setting ``cancel`` stops the child after its current step;
    closing the generator does the same. Errors in the child are raised here as ``RuntimeError``."""
    kwargs = dict(config_dict=config.to_dict(), ann_path=str(annotations), images_dir=str(images_dir),
                  run_dir=str(run_dir), init=str(init_weights) if init_weights else None)
    return (yield from _run_in_child("train", kwargs, cancel, poll_seconds))


def fine_tune_in_subprocess(annotations: str | Path, images_dir: str | Path, run_dir: str | Path,
                            cancel: threading.Event | None = None, poll_seconds: float = 0.1,
                            **settings) -> Iterator[StepInfo]:
    """``finetune.fine_tune`` on the boxes of a COCO file in a child process, with its keyword ``settings``
    (weights, minutes, zoom, ...): yields a ``StepInfo`` per training step and returns the ``FineTuneReport``;
    ``cancel`` or closing the generator ends training early, and the child still measures, chooses and writes
    ``run_dir/model.pt``."""
    kwargs = dict(ann_path=str(annotations), images_dir=str(images_dir), run_dir=str(run_dir),
                  **{k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()})
    return (yield from _run_in_child("fine-tune", kwargs, cancel, poll_seconds))


def _run_in_child(job: str, kwargs: dict, cancel: threading.Event | None, poll_seconds: float):
    ctx = mp.get_context("spawn")
    out_q = ctx.Queue()
    child_cancel = ctx.Event()
    process = ctx.Process(target=_child, args=(job, kwargs, out_q, child_cancel), daemon=True)
    process.start()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                child_cancel.set()
            try:
                kind, payload = out_q.get(timeout=poll_seconds)
            except queue_module.Empty:
                if not process.is_alive():
                    raise RuntimeError(f"the training process ended unexpectedly (exit code {process.exitcode})")
                continue
            if kind == "step":
                yield payload
            elif kind == "done":
                return payload
            else:
                raise RuntimeError(payload)
    finally:
        child_cancel.set()  # a closed generator (e.g. napari quitting the worker) stops the child too
        process.join(timeout=120)
        if process.is_alive():
            process.terminate()


def run_to_end(generator: Iterator[StepInfo]) -> tuple[list[StepInfo], Any]:
    """Consume a ``train_in_subprocess`` generator: (step infos, TrainResult)."""
    infos = []
    while True:
        try:
            infos.append(next(generator))
        except StopIteration as stop:
            return infos, stop.value


__all__ = ["TrainResult", "fine_tune_in_subprocess", "run_to_end", "train_in_subprocess"]
