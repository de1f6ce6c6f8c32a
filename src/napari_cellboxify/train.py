"""The Trainer: one loop for the CLI, the napari widget, benchmarks and torchrun.

- Batches come from ``data.dataset.StepBatches`` (deterministic per step), so ``resume`` reproduces the loss
  curve of an uninterrupted run: the checkpoint stores model, optimiser, scheduler, grad scaler and torch RNG.
- ``cancel`` (a ``threading.Event``) is polled between steps; cancelling writes a checkpoint of the last
  finished step, so nothing trained is lost.
- With ``train.ema_decay`` > 0 an exponential moving average of the weights (``ema.py``) is kept beside them;
  ``model.pt`` then holds the average (the model to use), ``last.pt`` both.
- Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on
  CUDA); every rank trains on its own images and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from .checkpoint import CheckpointError, config_from_checkpoint, load_state, read_checkpoint, save_checkpoint, save_weights
from .config import CellBoxifyConfig
from .data.dataset import Source, StepBatches, collate_single
from .device import autocast_enabled, pick_device
from .ema import weight_average
from .io_utils import atomic_write_text, remove_stale_temporaries
from .losses import combine_losses


# config.train.trainable -> (prefixes of the parameters trained, prefixes excluded from them); the rest keep
# their loaded values. Names as in the torchvision Mask R-CNN our model extends.
TRAINED_PARTS = {
    "heads": (("rpn.", "roi_heads."), ()),
    "detector": (("",), ("roi_heads.polygon_head.",)),
    "box_heads": (("rpn.", "roi_heads.box_"), ()),
    "polygon_head": (("roi_heads.polygon_head.",), ()),
}


@dataclass
class StepInfo:
    step: int  # steps finished so far (1-based after the first step)
    total_steps: int
    loss: float
    terms: dict[str, float]
    lr: float
    seconds: float  # wall time of this step


@dataclass
class TrainResult:
    steps_done: int  # the step the run stands at (a resumed run counts the steps of its earlier runs)
    cancelled: bool
    checkpoint: Path | None
    weights: Path | None
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    first_step: int = 0  # the step this run started from (0, or where it resumed)

    @property
    def steps_this_run(self) -> int:
        return self.steps_done - self.first_step


class Callback(Protocol):
    def __call__(self, info: StepInfo) -> None: ...


def lr_factor(step: int, total: int, drops: tuple[float, ...], warmup: int) -> float:
    """Linear warm-up, then x0.1 at each fraction in ``drops`` (detectron2's WarmupMultiStepLR)."""
    factor = 0.1 ** sum(step >= int(f * total) for f in drops)
    if step < warmup:
        factor *= 0.001 + (1 - 0.001) * step / warmup
    return factor


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1:
        return torch.distributed.get_rank(), world
    return 0, 1


class Trainer:
    """Train CellBoxify on a data source.

    Args:
        config: the shared config (train.steps, lr, batch size, loss weights, ...).
        source: training images with boxes (``data.dataset.Source``).
        out_dir: run folder; gets ``last.pt`` (resumable), ``model.pt`` (weights), ``loss_log.jsonl``,
            ``config.json``.
        init_weights: start from these weights (fine-tuning); the config's architecture must match.
        callbacks: called after every step with a ``StepInfo`` (progress bars, live loss plots).
        cancel: set it from any thread to stop after the current step.
    """

    def __init__(
        self,
        config: CellBoxifyConfig,
        source: Source,
        out_dir: str | Path,
        init_weights: str | Path | None = None,
        callbacks: list[Callable[[StepInfo], None]] | None = None,
        cancel: threading.Event | None = None,
        device: str | torch.device | None = None,
    ):
        from .model import build_model

        self.config = config
        self.source = source
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks or [])
        self.cancel = cancel or threading.Event()
        self.rank, self.world = _distributed()
        if device is None:
            device = pick_device(config.train.device)
            if self.world > 1 and device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(device)
        torch.manual_seed(config.train.seed)
        self.model = build_model(config, load_pretrained=init_weights is None)
        if init_weights is not None:
            data = read_checkpoint(init_weights)
            stored = config_from_checkpoint(data, init_weights)
            if stored.model.backbone != config.model.backbone:
                raise CheckpointError(
                    f"{init_weights} holds a {stored.model.backbone} model but the config asks for "
                    f"{config.model.backbone}"
                )
            head = self.model.roi_heads.polygon_head
            # Kept only when asked for: the seed's fresh initialisation, as a run from scratch has it.
            fresh_head = ({k: v.clone() for k, v in head.state_dict().items()}
                          if config.train.reset_polygon_head else None)
            load_state(self.model, data["model"], init_weights)
            if fresh_head is not None:
                head.load_state_dict(fresh_head)
        # A model that already detects cells gets the pairwise terms at full weight from the first step.
        self.pairwise_warmup_steps = 0 if init_weights is not None else config.loss.pairwise_warmup_steps
        if config.train.trainable != "all":
            include, exclude = TRAINED_PARTS[config.train.trainable]
            for name, param in self.model.named_parameters():
                if not name.startswith(include) or name.startswith(exclude):
                    param.requires_grad_(False)
        # With the mask branch kept, its loss terms are not computed: they must not move the features it reads.
        heads = self.model.roi_heads
        heads.polygon_losses = any(p.requires_grad for p in heads.polygon_head.parameters())
        self.model.to(self.device)
        # After loading and moving: the average starts as a copy of the model it follows.
        self.ema = weight_average(self.model, config.train.ema_decay) if config.train.ema_decay > 0 else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
        t = config.train
        warmup = min(500, t.steps // 10) if t.warmup_steps is None else t.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.steps, tuple(t.lr_drop_fractions), warmup)
        )
        self.amp = autocast_enabled(self.device, t.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.result: TrainResult | None = None
        if self.rank == 0:  # a run killed mid-write (SIGKILL) leaves its temporary file; the real one is intact
            remove_stale_temporaries(self.out_dir, ["last.pt", "model.pt", "loss_log.jsonl", "config.json"])
        self.ddp_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=True
            )

    # ------------------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def inference_model(self) -> torch.nn.Module:
        """The weights to evaluate and ship: the moving average when there is one, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def weights_path(self) -> Path:
        return self.out_dir / "model.pt"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "loss_log.jsonl"

    def resume(self) -> bool:
        """Load ``last.pt`` from the run folder if there is one; returns whether it did."""
        if not self.checkpoint_path.exists():
            return False
        data = read_checkpoint(self.checkpoint_path)
        load_state(self.model, data["model"], self.checkpoint_path)
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        if "scaler" in data and self.amp:
            self.scaler.load_state_dict(data["scaler"])
        if self.ema is not None and "ema" in data:  # else the average restarts from the resumed weights
            self.ema.load_state_dict(data["ema"])
        self.step = int(data["step"])
        # A fine-tuning run resumes without its init weights: the checkpoint says whether it had a warm-up.
        self.pairwise_warmup_steps = int(data.get("pairwise_warmup_steps", self.pairwise_warmup_steps))
        torch.set_rng_state(data["rng"])
        if torch.cuda.is_available() and "cuda_rng" in data:
            torch.cuda.set_rng_state_all(list(data["cuda_rng"]))
        self._truncate_log(self.step)
        return True

    def save(self) -> None:
        if self.rank != 0:
            return
        payload = {
            "kind": "checkpoint",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": self.config.to_dict(),
            "step": self.step,
            "pairwise_warmup_steps": self.pairwise_warmup_steps,
            "rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        if torch.cuda.is_available():
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.checkpoint_path, payload)
        save_weights(self.weights_path, self.inference_model, self.config, extra={"step": self.step})

    # ------------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to ``train.steps`` (or until cancelled) and return what was done."""
        for _ in self.iter_steps():
            pass
        return self.result

    def iter_steps(self) -> Iterator[StepInfo]:
        """Train, yielding a ``StepInfo`` after every step (for GUI workers); ``self.result`` is set at the end.

        The final checkpoint is written however the loop ends: finished, cancelled, or the generator closed; after
        an error, only if a step was trained (a run that failed on its first image must not leave a model.pt that
        looks trained).
        """
        cfg = self.config.train
        total = cfg.steps
        start_time, first_step = time.time(), self.step
        config_path = self.out_dir / "config.json"
        new_folder, new_config = not self.out_dir.exists(), not config_path.exists()
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(config_path)
        batches = StepBatches(self.source, self.config, self.step, total, self.rank, self.world)
        loader = torch.utils.data.DataLoader(
            batches,
            batch_size=1,
            shuffle=False,
            num_workers=cfg.num_workers,
            collate_fn=collate_single,
            persistent_workers=False,
            # its own generator: creating the iterator must not draw from the global RNG, which a resumed run
            # restores from the checkpoint (that draw would shift every random choice after a resume)
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        history: list[dict] = []
        self.model.train()
        failed = True
        try:
            for batch in loader:
                if self._should_stop():
                    break
                t0 = time.time()
                try:
                    info = self._train_step(batch, total)
                except torch.OutOfMemoryError:
                    raise MemoryError(
                        f"out of {self.device.type} memory at step {self.step + 1}: lower train.batch_size or "
                        f"data.crop_size (now {self.config.train.batch_size} and {self.config.data.crop_size}); "
                        f"the checkpoint of step {self.step} is kept"
                    ) from None
                info.seconds = time.time() - t0
                record = {"step": info.step, "loss": info.loss, "lr": info.lr, "seconds": info.seconds, **info.terms}
                history.append(record)
                if self.rank == 0 and (info.step % cfg.log_every == 0 or info.step == total):
                    self._append_log(record)
                for callback in self.callbacks:
                    callback(info)
                if info.step % cfg.checkpoint_every == 0 and info.step < total:
                    self.save()
                yield info
            failed = False
        except GeneratorExit:  # closed by its consumer (a GUI worker stopping): keep what was trained
            failed = False
            raise
        finally:
            if history or not failed:
                self.save()
            elif self.rank == 0 and new_config and not self.checkpoint_path.exists():
                # failed before its first step: leave nothing that looks like a run
                config_path.unlink(missing_ok=True)
                if new_folder:
                    with contextlib.suppress(OSError):
                        self.out_dir.rmdir()  # only if empty
            self.result = TrainResult(
                steps_done=self.step,
                cancelled=self.step < total,
                checkpoint=self.checkpoint_path if self.rank == 0 else None,
                weights=self.weights_path if self.rank == 0 else None,
                history=history,
                wall_seconds=time.time() - start_time,
                first_step=first_step,
            )

    def _should_stop(self) -> bool:
        stop = self.cancel.is_set()
        if self.world > 1:  # every rank must stop at the same step or the collectives hang
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item() > 0)
        return stop

    def _train_step(self, batch, total: int) -> StepInfo:
        images = [img.to(self.device, non_blocking=True) for img, _ in batch]
        targets = [{k: v.to(self.device) for k, v in t.items()} for _, t in batch]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.ddp_model(images, targets)
            loss = combine_losses(losses, self.config.loss, self.step, self.pairwise_warmup_steps)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss)} at step {self.step + 1} (terms: "
                f"{ {k: round(float(v), 4) for k, v in losses.items()} }); try a lower learning rate"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        terms = {k: float(v.detach()) for k, v in losses.items()}
        return StepInfo(self.step, total, float(loss.detach()), terms, lr, 0.0)

    def _append_log(self, record: dict) -> None:
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past the resumed step, so the log is the curve of one uninterrupted run."""
        if self.rank != 0 or not self.log_path.exists():
            return
        kept = [line for line in self.log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))


def read_loss_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

