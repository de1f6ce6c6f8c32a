"""Fine-tune on a user's boxes within a time budget, measured on boxes set aside, never returning a worse model.

One function, ``fine_tune``, serves ``cellboxify fine-tune`` and the panel's *Fine-tune*:

1. **Check boxes** (``check_boxes``). A strip at the far end of each boxed area (along its longer side) holding
   about a fifth of that image's boxes is set aside; the network never trains on its pixels. Detection there
   (COCO bbox AP against the set-aside boxes, detections counted by their centre) is the yardstick of every
   choice below.
2. **Start weights and zoom.** ``zoom_fit.fit_zoom`` on the training boxes picks the zoom at which the start
   weights' boxes match the user's best (cells of another kind have another size in pixels), when it beats
   the weights' own zoom there by more than the boxes' noise (``min_gain``; else the own zoom stays). With
   ``weights="auto"`` (the default) every shipped file is searched so; those that find the training boxes clearly
   worse than the best (by ``min_gain``) are ruled out (nuclei in fluorescence start from ``nuclei``), and among
   the rest the one that agrees most with itself on the user's whole image and its mirror image starts
   (``flip_agreement``: a few dozen boxes in one corner rank close files by chance).
3. **Training**, inside the time budget: the recipe (which parts train, learning rate; ``Recipe``) comes from
   ``RECIPES`` (measured in benchmarks/bench_adapt.py); crops are a fixed size as the network sees them. The
   check boxes are scored at regular times during training and the best-scoring weights are kept (the number
   of steps is chosen by measurement, not fixed).
   The best-checked weights are then averaged with the start's (``BLEND``, weight-space interpolation as in
   WiSE-FT): a few dozen boxes in one part of one image pull the trained weights toward that part, and the
   midpoint keeps most of what they learned while losing less on the user's other images. The check boxes do
   not choose between the blend and the weights as trained (they lie in the trained image and favour the
   latter); the weights as trained are written only when the start finds (almost) none of the check boxes, they
   clear the never-worse bar below and the blend does not (early in a fine-tune from weights that find nothing).
4. **Never worse.** The result is the best of: the start weights at their own zoom, at the fitted zoom, and the
   fine-tuned weights, where a change must beat the start by ``min_gain`` on the check boxes *and* score higher
   on at least ``STEADY_SHARE`` of random halves of them (``steady_share``): a gain carried by one or two boxes
   is noise. When fine-tuning did not, the start weights are written (``force=True`` writes the fine-tuned ones
   anyway) and the report says so. When ``"auto"`` started from another file than the default, the default is
   the one to beat instead if it beats the chosen file there by the same rule.

Writes ``RUN/model.pt`` (weights, config with the zoom) and ``RUN/report.json``; ``FineTuneReport.summary()`` is
the one-line answer the CLI prints and the panel shows.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import save_weights
from .config import CellBoxifyConfig
from .check_boxes import (MIN_BOXES_TO_CHECK, MIN_GAIN, STEADY_SHARE, AreaSource, Check, ImageSplit, check_ap,
                          min_gain, split_check_boxes, steady_share)
from .data.transforms import normalize_image
from .flip_agreement import flip_agreement, most_agreeing
from .io_utils import atomic_write_text
from .weights import DEFAULT, SHIPPED

NETWORK_CROP = 256  # training crop side as the network sees it (after the zoom): bounds a CPU step's cost
CELLS_PER_CROP = 3  # a training crop spans at least this many median cells (up to twice NETWORK_CROP)
PILOT_SHARE = 0.3  # share of the training time each racing recipe gets before the best one goes on
WARMUP_STEPS = 20  # a short ramp: Adam's first steps on new heads' gradients would otherwise jolt the weights
# Share of the fine-tuned weights in what is written, the rest the start's. Chosen by hand on images neither
# benchmarked nor shipped-trained on (docs/experiments/2026-12-06-interpolating-fine-tuned-weights.md): at 0.5 the
# other images scored 2.0 segm AP more than the weights as trained, on average over 3 kinds of cells and 2 seeds
# (-1.4 to +6.3), and 3.9 more after 1-minute nuclei fine-tunes.
BLEND = 0.5
RESERVE_SECONDS = 12.0  # kept from the budget for the last check and writing the result (at most a tenth of it)


@dataclass(frozen=True)
class Recipe:
    """What a fine-tune trains: ``trainable`` is config.train.trainable (which parts), at learning rate ``lr``."""

    name: str
    trainable: str
    lr: float


# Tried in the order given; see benchmarks/RESULTS.md "Fine-tuning on a few boxes" for how they were measured.
RECIPES = (Recipe("detector", "detector", 3e-4), Recipe("box_heads", "box_heads", 3e-4))
# Zooms searched, as factors of the start zoom: fit_zoom's range and up to twice the start, as new cells (neurons,
# nuclei) are often smaller in pixels than the cells the weights learned.
ZOOM_FACTORS = (0.5, 2 / 3, 5 / 6, 1.0, 7 / 6, 4 / 3, 5 / 3, 2.0)


class RecipeRun:
    """One recipe's training, advanced a step at a time (so that recipes can race), with the best-checked weights
    kept in memory."""

    def __init__(self, recipe: Recipe, trainer):
        self.recipe, self.trainer = recipe, trainer
        self.steps = trainer.iter_steps()
        self.best_ap, self.best_state, self.best_step = -1.0, None, 0
        self.best_check: Check | None = None
        self.checks: list[dict] = []

    def step(self):
        """Train one step; its ``StepInfo``, or None when the run has ended."""
        return next(self.steps, None)

    def record(self, check: "Check | None", seconds: float) -> None:
        ap = None if check is None else check.ap
        self.checks.append({"step": self.trainer.step, "seconds": round(seconds, 1), "ap": ap})
        if ap is None or ap > self.best_ap:  # unchecked runs keep the last weights
            self.best_ap, self.best_check = (-1.0 if ap is None else ap), check
            self.best_state = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}
            self.best_step = self.trainer.step

    def close(self) -> None:
        """End training (the Trainer writes its checkpoint, as a cancelled run does)."""
        self.steps.close()


@dataclass
class FineTuneReport:
    """What a fine-tune did; written as ``report.json``. AP values are COCO bbox AP (0-100) on the check boxes."""

    boxes: int
    check_boxes: int
    images: int
    start_weights: str
    start_zoom: float
    fitted_zoom: float
    zoom_search: dict[str, float]
    before_ap: float | None  # the start weights at their own zoom
    before_ap_fitted_zoom: float | None
    after_ap: float | None  # the fine-tuned weights: the best-checked step, blended with the start unless blend is 1
    kept: str  # "fine-tuned" | "start" | "start, fitted zoom"
    reason: str
    recipe: dict
    steps: int
    best_step: int
    seconds_per_step: float
    device: str
    budget_seconds: float
    wall_seconds: float = 0.0
    checks: list[dict] = field(default_factory=list)  # [{"step", "seconds", "ap", "recipe"}, ...] during training
    race: dict = field(default_factory=dict)  # recipe -> best check AP of its pilot, when recipes raced
    # weights="auto": each shipped name -> its best bbox AP on the training boxes over the zooms searched, and
    # the name chosen
    start_choice: dict = field(default_factory=dict)
    # ... and, among the names the training boxes left in (more than one), each one's flip agreement on the boxed
    # images (flip_agreement), which chose between them
    start_agreement: dict = field(default_factory=dict)
    start_name: str = ""
    default_ap: float | None = None  # the default file's check AP, when auto started from another file
    zoom: float = 0.0  # the zoom written with model.pt (trained at it, or the start's kept)
    steady_share: float | None = None  # of the kept change (or the best refused one): see steady_share()
    cancelled: bool = False
    blend: float = BLEND  # share of the fine-tuned weights in the written ones (1.0: as trained; see BLEND)
    after_ap_unblended: float | None = None  # the best-checked step as trained, before the blend
    after_ap_blended: float | None = None  # the blend, whichever was written

    def summary(self) -> str:
        """One line, in the user's words."""
        if self.check_boxes == 0:
            return (f"fine-tuned on {self.boxes} boxes for {self.steps} steps ({self.wall_seconds:.0f} s); too few "
                    f"boxes to keep any aside ({MIN_BOXES_TO_CHECK} needed), so the result is unchecked")
        after = "-" if self.after_ap is None else f"{self.after_ap:.0f}"
        now = {"start": self.before_ap, "start, fitted zoom": self.before_ap_fitted_zoom,
               "default": self.default_ap}.get(self.kept, self.after_ap)
        started = ""
        if self.start_choice:
            started = (f"started from {self.start_name} (" + ", ".join(f"{n} {ap:.0f}" for n, ap in self.start_choice.items())
                       + " on your training boxes" + ("; it agreed most with itself on your image"
                                                          if len(self.start_agreement) > 1 else "") + "); ")
        first = self.before_ap if self.default_ap is None else self.default_ap  # what the user had
        return (f"{started}on {self.check_boxes} of your boxes kept aside, detection AP {first:.0f} -> "
                f"{now if now is not None else first:.0f} (fine-tuned {after}, {self.steps} steps in "
                f"{self.wall_seconds:.0f} s); {self.reason}")

    def to_dict(self) -> dict:
        return asdict(self)


def fine_tune_run_config(start: CellBoxifyConfig, recipe: Recipe, zoom: float, smallest_side: int,
                         median_side: float, device: str) -> CellBoxifyConfig:
    """The training config of one fine-tune: the start weights' model and data sections, the recipe's parts and
    learning rate, a constant rate after a short warm-up (the run ends by time, not by a step count), crops of
    ``NETWORK_CROP`` px as the network sees them (more for large cells: ``median_side``, image px), and lighter
    sampling than full training (fewer proposals and RoIs per step: a few dozen boxes need no more, and a CPU
    step costs less)."""
    from .recipes import fine_tune_config

    config = fine_tune_config(start)
    config.model.image_scale = float(zoom)
    config.model.rpn_pre_nms_top_n_train = min(config.model.rpn_pre_nms_top_n_train, 1000)
    config.model.rpn_post_nms_top_n_train = min(config.model.rpn_post_nms_top_n_train, 300)
    config.model.box_batch_size_per_image = min(config.model.box_batch_size_per_image, 128)
    config.data.annotated_area = "image"  # AreaSource has already cut each image to its training area
    # At least CELLS_PER_CROP median cells across, up to twice NETWORK_CROP: a crop narrower than a cell (cortical
    # neurons at 2x zoom) would teach mostly boxes cut by its edge.
    network_crop = min(2 * NETWORK_CROP, max(NETWORK_CROP, CELLS_PER_CROP * median_side * zoom))
    config.data.crop_size = max(32, min(round(network_crop / zoom), smallest_side))
    config.train.trainable = recipe.trainable
    config.train.lr = recipe.lr
    config.train.lr_drop_fractions = ()
    config.train.warmup_steps = WARMUP_STEPS
    config.train.steps = 100_000  # a ceiling: the time budget ends the run
    config.train.checkpoint_every = 100_000
    config.train.log_every = 1
    config.train.ema_decay = 0.0
    config.train.device = device
    config.validate()
    return config


def fine_tune(items: list[tuple[str, np.ndarray, np.ndarray]], out_dir: str | Path,
              weights: str | Path | None = "auto", minutes: float = 5.0, device: str = "auto", force: bool = False,
              zoom: float | None = None,
              recipe: Recipe | None = None, seed: int = 0, check_every_seconds: float = 30.0, blend: float = BLEND,
              max_steps: int | None = None, on_step: Callable | None = None, cancel: threading.Event | None = None,
              log: Callable[[str], None] | None = None) -> FineTuneReport:
    """Fine-tune ``weights`` on the user's boxes within ``minutes``.

    Args:
        items: ``[(name, image, boxes_xyxy), ...]``: each boxed image (2-D or RGB, any dtype) with its boxes
            (N, 4) XYXY in image pixels. Every cell inside the rectangle around an image's boxes should be boxed.
        out_dir: gets ``model.pt`` (the model to use) and ``report.json``; the training run itself in
            ``out_dir/train``.
        weights: ``"auto"`` or None (a shipped file chosen by the training boxes and flip agreement), a shipped name
            (``cells``, ``nuclei``) or a file.
        minutes: wall-time budget of the whole call (start choice, zoom search, checks and training).
        zoom: the zoom to start from (the panel's Zoom); default the weights' own. The search goes around it.
            Not used with ``"auto"``: each shipped file is searched around its own zoom.
        force: write the fine-tuned weights even when the check boxes say the start weights were better.
        blend: share of the fine-tuned weights in those written (``BLEND``; 1.0 writes them as trained); the
            weights as trained replace the blend only when the start finds (almost) none of the check boxes and
            they pass the never-worse rule and the blend does not.
        recipe: what to train; default: the ``RECIPES`` race (each trains for a share of the time, the one that
            finds the check boxes best goes on).
        max_steps: end training after this many steps of the recipe that goes on, if the budget lasts (a
            reproducible run: with ``check_every_seconds`` past the budget only the last step is checked).
        on_step: called with each training ``StepInfo``; ``cancel`` (set from any thread) ends training early,
            and the best weights found so far are still measured and written.
        log: called with a line for each stage (the CLI prints them).
    """
    from .checkpoint import load_model
    from .device import pick_device
    from .train import Trainer
    from .weights import resolve_weights

    t_start = time.time()
    budget = float(minutes) * 60.0
    deadline = t_start + budget - min(RESERVE_SECONDS, 0.1 * budget)
    say = log or (lambda line: None)
    cancel = cancel or threading.Event()
    out_dir = Path(out_dir)
    auto = weights is None or weights == "auto"
    if zoom is not None and not zoom > 0:
        raise ValueError(f"the zoom must be > 0, got {zoom}")
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"the blend must be between 0 and 1, got {blend}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    candidates = ({name: resolve_weights(name) for name in SHIPPED} if auto
                  else {"": resolve_weights(str(weights) if isinstance(weights, str) else weights)})
    items = [(name, image, np.asarray(boxes, np.float32).reshape(-1, 4)) for name, image, boxes in items]
    items = [item for item in items if len(item[2])]
    n_boxes = sum(len(b) for _, _, b in items)
    if not n_boxes:
        raise ValueError("no boxes to fine-tune on: draw boxes around the cells of one part of an image first")
    torch_device = pick_device(device)

    splits = split_check_boxes([(name, image.shape[:2], boxes) for name, image, boxes in items])
    n_check = sum(len(s.check_boxes) for s in splits)
    say(f"{n_boxes} boxes on {len(items)} image(s); {n_check} kept aside to check the result")
    starts = {name: _start_point(path, items, splits, torch_device, None if auto else zoom)
              for name, path in candidates.items()}
    choice, agreement = (DEFAULT if auto else ""), {}
    if auto:
        # The training boxes rule out the files that find them clearly worse than the best (by min_gain); a few
        # dozen boxes in one corner rank the rest by chance, so among those the file that agrees most with itself
        # on the whole image and its mirror image starts (flip_agreement; ties go to the default).
        best_ap = max(p.fit_ap for p in starts.values())
        plausible = [n for n, p in starts.items() if p.fit_ap >= best_ap - min_gain(n_boxes - n_check)]
        if len(plausible) > 1:
            agreement = {n: round(_agreement(starts[n], items), 3) for n in plausible}
        choice = most_agreeing({n: agreement.get(n, 0.0) for n in plausible})
        say("start weights: " + ", ".join(f"{n} {p.fit_ap:.1f}" for n, p in starts.items())
            + " bbox AP on your training boxes"
            + ("; agreement with the mirror image " + ", ".join(f"{n} {a:.2f}" for n, a in agreement.items())
               if agreement else "") + f"; starting from {choice}")
    point = starts[choice]
    weights, start_config, start_zoom, normalised, fit = point.path, point.config, point.zoom, point.normalised, point.fit
    zoom = round(fit.zoom, 2)  # from here on, the zoom trained and checked at (2 decimals, as the panel shows it)
    before = check_ap(point.model, normalised, splits, start_zoom)
    before_fitted = check_ap(point.model, normalised, splits, zoom) if zoom != start_zoom else before
    say(f"zoom {start_zoom:g} -> {zoom:g} (bbox AP on your training boxes: {fit.summary()}); check AP before: "
        f"{_fmt(before)} at zoom {start_zoom:g}, {_fmt(before_fitted)} at {zoom:g}")
    train_zoom = zoom
    if before is not None and before_fitted is not None and before_fitted.ap < before.ap - MIN_GAIN:
        # The check boxes disagree with the training boxes about the zoom (seen on nuclei: 68.7 vs 61.3 on 24
        # training boxes, 29 vs 56 on the 6 check boxes): train at the zoom the weights know.
        train_zoom = start_zoom
        say(f"training at zoom {start_zoom:g}: the kept-aside boxes are found better there")
    start_choice = {n: round(p.fit_ap, 1) for n, p in starts.items()} if auto else {}
    # auto chose another file than the default: the default's check, which may overrule the choice, and what writing
    # the default back needs (its file, config and zoom)
    default_check = default_path = default_config = default_zoom = None
    if choice not in ("", DEFAULT):
        d = starts[DEFAULT]
        default_path, default_config, default_zoom = d.path, d.config, d.zoom
        default_check = check_ap(d.model, d.normalised, splits, d.zoom)
    del starts, point

    smallest = min(min(s.train_area[1] - s.train_area[0], s.train_area[3] - s.train_area[2]) for s in splits
                   if len(s.train_boxes))
    source = AreaSource(normalised, splits)
    trained = np.concatenate([s.train_boxes for s in splits])
    median_side = float(np.median(np.concatenate([trained[:, 2] - trained[:, 0], trained[:, 3] - trained[:, 1]])))
    recipes = [recipe] if recipe is not None else list(RECIPES)
    runs = []
    for candidate in recipes:
        config = fine_tune_run_config(start_config, candidate, train_zoom, smallest, median_side, device)
        config.train.seed = seed
        if max_steps is not None:
            config.train.steps = int(max_steps)
        folder = out_dir / ("train" if len(recipes) == 1 else f"train_{candidate.name}")
        runs.append(RecipeRun(candidate, Trainer(config, source, folder, init_weights=weights, device=torch_device)))

    def measure(run: RecipeRun) -> None:
        check = check_ap(run.trainer.model, normalised, splits, train_zoom)
        run.record(check, time.time() - t_start)
        say(f"{run.recipe.name}, step {run.trainer.step}: check AP {_fmt(check)}")

    start_state = {k: v.detach().clone() for k, v in runs[0].trainer.model.state_dict().items()}
    run = _race(runs, deadline, measure if n_check else None, check_every_seconds, cancel, on_step, say)
    trainer = run.trainer
    steps = trainer.step
    out_of_time = not cancel.is_set()
    best_state, best_step = run.best_state, run.best_step
    if best_state is None and steps:  # unchecked: the last weights, blended as checked ones are
        best_state, best_step = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, steps
    checks = sorted((dict(c, recipe=r.recipe.name) for r in runs for c in r.checks), key=lambda c: c["seconds"])
    race = ({r.recipe.name: (None if r.best_ap < 0 else round(r.best_ap, 2)) for r in runs}
            if len(runs) > 1 else {})
    unblended = run.best_check if (n_check and best_state is not None) else None
    blended = blended_state = None
    if best_state is not None and blend < 1.0:
        blended_state = blend_states(start_state, best_state, blend)
        if n_check:
            trainer.model.load_state_dict(blended_state)
            blended = check_ap(trainer.model, normalised, splits, train_zoom)
            say(f"blended {blend:g} fine-tuned + {1 - blend:g} start: check AP {_fmt(blended)} "
                f"(as trained {_fmt(unblended)})")
    del start_state
    # What "fine-tuned" writes: the blend, or the weights as trained when there is no blend, or when only they
    # clear the never-worse bar below. Never because the check boxes prefer them to the blend: they lie in the
    # image trained on and favour its specialisation (four DSB2018 validation fine-tunes: as trained 9 to 21 check
    # AP above the blend, 1 to 6 segm AP below it on other images; 2026-12-06-interpolating-fine-tuned-weights.md).
    after, tuned_state = (blended, blended_state) if blended_state is not None else (unblended, best_state)
    if blended_state is None:
        blend = 1.0

    steadiness = None
    if not n_check:
        kept, reason = ("fine-tuned" if steps else "start"), "unchecked: too few boxes to keep any aside"
    elif force and tuned_state is not None:
        kept, reason = "fine-tuned", "kept the new weights (forced)"
    else:
        # A change must beat the start by more than a few boxes' noise (min_gain; the best of several noisy checks
        # is optimistic too) and hold across the check boxes (steady_share), not on one or two of them.
        kept, steadiness, needed = "start", None, min_gain(n_check)

        def gains(check: Check | None, over: Check) -> bool:  # by the margin; steadiness is judged apart
            return check is not None and check.ap >= over.ap + needed

        base = before
        # The check boxes overrule the choice of another file than the default only when they clearly prefer the
        # default: the choice was made on more boxes (and the whole image) than the few kept aside.
        if default_check is not None and gains(default_check, before):
            steadiness = steady_share(before, default_check)
            if steadiness >= STEADY_SHARE:
                kept, base = "default", default_check

        def clears(check: Check | None) -> bool:
            return gains(check, base) and steady_share(base, check) >= STEADY_SHARE

        # Early in a fine-tune from weights that find nothing, the blend may not yet clear the bar that the
        # weights as trained clear (1 minute on 30 nuclei from `cells`: 9.8 blended, 25.6 as trained, 0.1 start).
        # Only there: from weights that find the check boxes (base above the noise margin), the weights as trained
        # passed the bar and lost on the user's other images each time they replaced the blend (10 SH-SY5Y boxes
        # from `neurons`: check 19 -> 54, other images 13.7 -> 5.1; 100 nuclei from `nuclei`: 74 -> 83, 54.1 -> 52.1).
        finds_nothing = base.ap < needed
        if (finds_nothing and blended is not None and unblended is not None and not clears(blended)
                and clears(unblended)):
            after, tuned_state, blend = unblended, best_state, 1.0
        changes = sorted(((c.ap, k, c) for k, c in (("fine-tuned", after), ("start, fitted zoom", before_fitted))
                          if c is not before and gains(c, base)),
                         key=lambda t: -t[0])
        for _, name, change in changes:
            steadiness = steady_share(base, change)
            if steadiness >= STEADY_SHARE:
                kept = name
                break
        why = (f"its gain did not hold across your kept-aside boxes (higher on {100 * steadiness:.0f}% of halves)"
               if changes else f"fine-tuning did not help by {needed:.0f} AP (needed on {n_check} boxes)")
        reason = {"fine-tuned": "kept the new weights" + ("" if blend < 1.0 or blended_state is None else
                                                          " as trained (the blend did not clear the bar)"),
                  "default": f"{DEFAULT} found your kept-aside boxes better than {choice} by {needed:.0f} AP or "
                             f"more, and fine-tuning did not beat it: kept {DEFAULT}",
                  "start": f"{why}: kept the weights it started from",
                  "start, fitted zoom": "fine-tuning did not help: kept the start weights at the fitted zoom"}[kept]

    source, out_config, source_zoom = weights, copy.deepcopy(start_config), start_zoom
    if kept == "default":
        source, out_config, source_zoom = default_path, copy.deepcopy(default_config), default_zoom
    if kept == "fine-tuned":
        model = trainer.model
        if tuned_state is not None:
            model.load_state_dict(tuned_state)
        out_config.model.image_scale = train_zoom
    else:
        model, _ = load_model(source, "cpu")
        out_config.model.image_scale = zoom if kept == "start, fitted zoom" else source_zoom
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / "model.pt", model.cpu(), out_config,
                 extra={"fine_tuned_from": source.name, "step": best_step if kept == "fine-tuned" else 0})
    seconds_per_step = (sum(h["seconds"] for h in trainer.result.history) / steps) if steps else 0.0
    report = FineTuneReport(
        boxes=n_boxes, check_boxes=n_check, images=len(items), start_weights=str(weights), start_zoom=start_zoom,
        fitted_zoom=zoom, zoom_search={f"{z:g}": round(ap, 2) for z, ap in sorted(fit.box_ap.items())},
        before_ap=_ap(before), before_ap_fitted_zoom=_ap(before_fitted), after_ap=_ap(after), kept=kept,
        default_ap=_ap(default_check),
        reason=reason, recipe=asdict(run.recipe), steps=steps, best_step=best_step,
        seconds_per_step=round(seconds_per_step, 3), device=str(torch_device), budget_seconds=budget, checks=checks,
        race=race, start_choice=start_choice, start_agreement=agreement, start_name=choice, zoom=out_config.model.image_scale,
        steady_share=None if steadiness is None else round(steadiness, 3), cancelled=not out_of_time,
        blend=blend, after_ap_unblended=_ap(unblended), after_ap_blended=_ap(blended),
    )
    report.wall_seconds = round(time.time() - t_start, 1)
    atomic_write_text(out_dir / "report.json", json.dumps(report.to_dict(), indent=2))
    return report


def blend_states(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                 share: float) -> dict[str, torch.Tensor]:
    """``(1 - share) * start + share * tuned`` for every floating-point tensor of two state dicts of one
    architecture; other tensors (counters) are ``tuned``'s."""
    return {k: torch.lerp(start[k].to(v.dtype), v, share) if v.is_floating_point() else v for k, v in tuned.items()}


@dataclass
class StartPoint:
    """One candidate start: its weights file, a predictor holding the loaded model at the file's zoom, its config,
    the images normalised as its config says, its zoom and the zoom search on the training boxes (``fit_ap``: the
    best bbox AP found)."""

    path: Path
    predictor: object  # predict.Predictor at ``zoom``
    config: CellBoxifyConfig
    zoom: float
    normalised: list[np.ndarray]
    fit: object

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @property
    def fit_ap(self) -> float:
        return max(self.fit.box_ap.values())


def _start_point(path: Path, items, splits: list[ImageSplit], device, zoom: float | None) -> StartPoint:
    from .checkpoint import load_model
    from .predict import Predictor
    from .zoom_fit import fit_zoom

    model, _ = load_model(path, device)
    predictor = Predictor(model, device)
    if zoom is not None:
        predictor.image_scale = zoom
    d = predictor.config.data
    normalised = [normalize_image(image, d.clahe, d.clahe_clip_limit) for _, image, _ in items]
    # Within the training boxes' noise the zoom stays the weights' own: on validation images the zoom that a few
    # dozen boxes fit by a smaller margin lost on the other images of their kind (Sartorius 44.4 -> 36.3 segm AP,
    # LIVECell 28.3 -> 27.3; docs/experiments/2026-12-07-zoom-change-margin.md).
    train_boxes = [(image, split.train_boxes) for (_, image, _), split in zip(items, splits) if len(split.train_boxes)]
    fit = fit_zoom(predictor, train_boxes, factors=ZOOM_FACTORS,
                   tolerance=min_gain(sum(len(boxes) for _, boxes in train_boxes)))
    return StartPoint(path, predictor, predictor.config, predictor.image_scale, normalised, fit)


def _agreement(point: StartPoint, items) -> float:
    """The start's mean flip agreement over the boxed images, at its own zoom."""
    return float(np.mean([flip_agreement(point.predictor, image, boxes) for _, image, boxes in items]))


def _race(runs: list[RecipeRun], deadline: float, measure: Callable[[RecipeRun], None] | None,
          check_every: float, cancel: threading.Event, on_step: Callable | None,
          say: Callable[[str], None]) -> RecipeRun:
    """Train ``runs`` until ``deadline`` and return the one that trained to the end (closed, its last step checked).

    With several runs and check boxes (``measure`` given), each first trains for ``PILOT_SHARE`` of the time
    left; the one whose checks scored best goes on alone. ``cancel`` stops everything after the current step.
    """

    def train(run: RecipeRun, until: float) -> None:
        next_check = time.time() + check_every
        while time.time() < until and not cancel.is_set():
            info = run.step()
            if info is None:
                return
            if on_step is not None:
                on_step(info)
            if measure is not None and time.time() >= next_check:
                measure(run)
                next_check = time.time() + check_every

    def measure_last(run: RecipeRun) -> None:
        if measure is not None and run.trainer.step and (not run.checks or run.checks[-1]["step"] != run.trainer.step):
            measure(run)

    if len(runs) > 1 and measure is not None:
        pilot = PILOT_SHARE * max(0.0, deadline - time.time())
        for run in runs:
            train(run, time.time() + pilot)
            measure_last(run)
        winner = max(runs, key=lambda r: r.best_ap)
        say(f"chose {winner.recipe.name} ({', '.join(f'{r.recipe.name} {r.best_ap:.1f}' for r in runs)})")
        for run in runs:
            if run is not winner:
                run.close()
        runs = [winner]
    run = runs[0]
    train(run, deadline)
    run.close()
    measure_last(run)
    return run


def boxes_from_coco(annotations: str | Path, images_dir: str | Path,
                    warn: Callable[[str], None] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(file_name, image, boxes_xyxy), ...]`` for the images of a COCO file that have boxes (``fine_tune``'s
    input, read by ``data.coco.boxed_images``); ``warn`` gets a line per kind of annotation skipped."""
    from .data.coco import boxed_images, load_coco

    coco = load_coco(annotations, images_dir)
    for reason, count in coco.skipped.items():
        if warn is not None:
            warn(f"skipped {count} annotation(s): {reason}")
    items = boxed_images(coco)
    if not items:
        raise ValueError(f"{annotations} has no usable boxes: draw boxes around the cells of one part of an image")
    return items


def _ap(check: Check | None) -> float | None:
    return None if check is None else check.ap


def _fmt(check: Check | None) -> str:
    return "-" if check is None else f"{check.ap:.1f}"
