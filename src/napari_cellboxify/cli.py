"""``cellboxify``: train / fine-tune / evaluate / predict / export / fit-zoom on the command line (a thin skin
over the core).

Bad arguments get one line and exit code 2; unusable inputs (files, weights, images) get one line and exit
code 1. No traceback reaches the user unless CELLBOXIFY_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from .config import TTA_MODES
from .io_utils import check_folder

EXIT_USAGE = 2
EXIT_INPUT = 1
MIN_MINUTES = 0.1  # a fine-tune's smallest budget: a few seconds of training, enough for a tiny model's test


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _number(kind: type, low: float, high: float = float("inf"), what: str | None = None):
    """An argparse type: a ``kind`` (int or float) in [low, high], refused in one line naming the range (nan too)."""
    what = what or (f"an integer >= {low:g}" if kind is int and high == float("inf")
                    else f"a number between {low:g} and {high:g}")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, what="a positive integer")
_nonneg_int = _number(int, 0)
_score = _number(float, 0.0, 1.0, what="a score between 0 and 1")  # a score above 1 would silently keep no cell


def _pixel_size(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0.0 < v < float("inf") for v in values):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a pixel size in µm (SIZE, or HEIGHT,WIDTH), got {text!r}")
    return (values[0], values[-1])


def _override(text: str) -> str:
    """A ``--set`` value checked against the config schema here (known key, value of its type), so that a typo
    is exit 2 before weights load; how it fits the other values is checked with the whole config."""
    from .config import ConfigError, parse_override

    try:
        parse_override(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


PREDICT_FORMATS = ("tiff", "coco", "csv", "boxes")
WEIGHTS_HELP = ("auto (the default: the shipped file that agrees most with itself on up to 3 of your images and "
                "their mirror images), a shipped file by name, cells (phase-contrast cells), nuclei (nuclei in "
                "fluorescence) or neurons (phase-contrast neuronal cultures), or a weights file")


def _formats(text: str) -> frozenset[str]:
    formats = frozenset(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = formats - set(PREDICT_FORMATS)
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(sorted(unknown)) or repr(text)} "
                                         f"(choose from {', '.join(PREDICT_FORMATS)})")
    return formats


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cellboxify", description="Instance masks of cells from a model trained on boxes.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", metavar="{train,fine-tune,evaluate,predict,export,fit-zoom}",
                                parser_class=_Parser)

    t = sub.add_parser("train", help="train or fine-tune on a COCO file (box-only by default)",
                       description="Train CellBoxify on COCO annotations. Box supervision reads only 'bbox'.")
    t.add_argument("--data", required=True, type=Path, help="COCO annotation JSON")
    t.add_argument("--images", required=True, type=Path, help="folder the COCO file_names are relative to")
    t.add_argument("--out", required=True, type=Path, help="run folder: last.pt, model.pt, loss_log.jsonl")
    t.add_argument("--supervision", choices=["box", "mask"], default=None,
                   help="box: boxes only (default); mask: full masks (reference model)")
    t.add_argument("--config", type=Path, help="YAML/JSON config file (only the keys that differ); default: the "
                   "defaults, or with --init the architecture inside those weights")
    t.add_argument("--init", help="start from these weights (cells, nuclei or a file); default: backbone init")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument("--steps", type=_positive_int, help="total training steps (overrides the config)")
    t.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                   metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set loss.unary_weight=4 (repeatable; after --config)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None, help="default: auto")
    t.add_argument("--pseudo-labels", type=Path, metavar="BOXES_JSON",
                   help="self-training: boxes with scores on unlabeled images (cellboxify predict --format boxes); "
                        "confident ones train as cells, uncertain ones are ignored (data.pseudo_* in the config)")
    t.add_argument("--pseudo-images", type=Path, help="folder the --pseudo-labels file_names are relative to")

    e = sub.add_parser("evaluate", help="COCO AP with LIVECell's settings (or oracle-box mask IoU)",
                       description="Evaluate weights on a COCO file; AP values are percentages (0-100).")
    e.add_argument("--data", required=True, type=Path, help="COCO annotation JSON with ground truth")
    e.add_argument("--images", required=True, type=Path, help="image folder")
    e.add_argument("--out", required=True, type=Path, help="folder for metrics.json")
    e.add_argument("--weights", help=WEIGHTS_HELP)
    e.add_argument("--oracle-boxes", action="store_true",
                   help="give the GT boxes, report mean mask IoU with filled-box and ellipse baselines")
    _add_inference_overrides(e)
    e.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")

    p = sub.add_parser("predict", help="segment images; write label TIFFs, COCO and/or CSV",
                       description="Segment every cell of the given images (files or folders). Writes "
                       "NAME_labels.tif, NAME_cells.csv, predictions_coco.json and boxes.json (by --format) into "
                       "--out, and refuses an --out that already holds one of them unless --overwrite.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--format", type=_formats, default=frozenset({"tiff"}), help="comma-separated: tiff, coco, csv, boxes (default: tiff); boxes writes the "
                   "detected boxes with their scores as COCO (boxes.json: to review, or as pseudo-labels)")
    p.add_argument("--tile", type=_positive_int, help="segment in tiles of this size (px); default: tiles of "
                   "1024 for images with a side over 2048 px, else the whole image at once")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--overlap", type=_nonneg_int, default=128, help="tile overlap (px, default 128)")
    p.add_argument("--score-threshold", type=_score, default=0.5, help="minimum detection score (default 0.5)")
    p.add_argument("--pixel-size", type=_pixel_size, metavar="UM",
                   help="pixel size in µm (SIZE, or HEIGHT,WIDTH) for the CSV's µm columns and the label TIFF; "
                   "default: read from each TIFF's OME/ImageJ/resolution metadata, none if it has none")
    _add_inference_overrides(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")

    x = sub.add_parser("export", help="export a run's weights for sharing (optionally half precision)",
                       description="Write a weights file (model + config) from a run folder or checkpoint.")
    x.add_argument("source", type=Path, help="run folder (its last.pt) or a checkpoint/weights file")
    x.add_argument("--out", required=True, type=Path, help="weights file to write")
    x.add_argument("--half", action="store_true", help="store float16 weights (half the size)")

    z = sub.add_parser("fit-zoom", help="choose the zoom for your images from boxes you drew",
                       description="Detect cells at several zooms around the weights' own and print the one whose "
                       "boxes match yours best (COCO bbox AP, inside the rectangle around your boxes: box every "
                       "cell in it). Without --weights the shipped file is chosen on your images first, as predict does. Pass "
                       "the answer to predict/evaluate as it prints it: --weights W --set model.image_scale=Z.")
    z.add_argument("--data", required=True, type=Path, help="COCO file with your boxes (e.g. the panel's export)")
    z.add_argument("--images", required=True, type=Path, help="folder the COCO file_names are relative to")
    z.add_argument("--weights", help=WEIGHTS_HELP)
    z.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                   metavar="SECTION.KEY=VALUE",
                   help="inference settings, e.g. --set model.image_scale=0.5 to search around 0.5 (repeatable)")
    z.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")

    f = sub.add_parser("fine-tune", help="adapt the weights to your cells from boxes you drew, within a time budget",
                       description="Fine-tune on your boxes: a fifth of them (a strip at the far end of each boxed "
                       "area) is kept aside to check the result, the start weights and zoom are fitted to your boxes, the detector "
                       "trains for the time given, and the weights that detect your kept-aside boxes best are "
                       "written to RUN/model.pt: the fine-tuned ones only when they beat the weights you started "
                       "from. RUN/report.json says what was measured and chosen. Box every cell inside the "
                       "rectangle around your boxes. Refuses a RUN that already holds a model.pt unless "
                       "--overwrite.")
    f.add_argument("--data", required=True, type=Path, help="COCO file with your boxes (bbox only is enough)")
    f.add_argument("--images", required=True, type=Path, help="folder the COCO file_names are relative to")
    f.add_argument("--out", required=True, type=Path, metavar="RUN", help="folder for model.pt and report.json")
    f.add_argument("--weights", default="auto",
                   help="weights to start from: auto (the default: the shipped file, cells, nuclei or neurons, "
                   "that detects your boxes best), cells, nuclei, neurons, or a weights file such as an earlier "
                   "RUN/model.pt")
    f.add_argument("--minutes", type=_number(float, MIN_MINUTES, 24 * 60), default=5.0,
                   help="time budget of the whole command, checks included (default 5)")
    f.add_argument("--max-steps", type=_number(int, 1, 10**7), default=None, metavar="N",
                   help="end training after N steps if the budget lasts (a reproducible run; the checks are then "
                   "taken every 30 s as usual)")
    f.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    f.add_argument("--force", action="store_true",
                   help="write the fine-tuned weights even when the kept-aside boxes say they are worse")
    f.add_argument("--overwrite", action="store_true", help="replace the model.pt and report.json of an earlier run")
    return parser


def _add_inference_overrides(verb: argparse.ArgumentParser) -> None:
    """``--set`` for the verbs that load weights (evaluate, predict): inference settings only."""
    verb.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                      metavar="SECTION.KEY=VALUE", help="override an inference setting of the weights' config, e.g. --set model.image_scale=0.5 "
                      "for images whose cells are twice LIVECell's size in pixels (repeatable)")
    verb.add_argument("--tta", choices=TTA_MODES, default=None,
                      help="test-time augmentation: segment flipped/turned (and zoomed) copies and merge them; "
                      "flips+scales: ~15x slower on a CPU, 2.5x on a GPU, +1.5 segm AP on LIVECell val "
                      "(default: the weights' setting, off)")


def _with_tta(args: argparse.Namespace) -> list[str]:
    """The verb's ``--set`` overrides, with ``--tta`` as one of them (it is the config's ``model.tta``)."""
    tta = getattr(args, "tta", None)  # fit-zoom has none
    return list(args.overrides) + ([f"model.tta={tta}"] if tta else [])


def _predictor(args: argparse.Namespace, verb: str, planes: Callable[[], list], **settings):
    """The verb's predictor, the weights (a shipped name or the file given), how to name them, and each shipped
    file's agreement when it chose them.

    ``--weights auto`` (or none) chooses the shipped file on the images first, as ``fine-tune`` chooses where it
    starts: the same sign, without boxes (flip_agreement.choose_shipped), on the images ``planes()`` returns."""
    from .checkpoint import check_overrides
    from .flip_agreement import choose_shipped, close_call
    from .predict import Predictor
    from .progress import tqdm_callback
    from .weights import SHIPPED, describe_weights, resolve_weights

    spec, chosen, agreement = args.weights, "", {}
    if spec in (None, "auto"):
        for name in SHIPPED:  # bad settings are refused before the choice, not after it
            check_overrides(resolve_weights(name), _with_tta(args))
        images = planes()
        with tqdm_callback(0, "choose weights") as progress:
            spec, agreement = choose_shipped(images, device=args.device, progress=progress)
        chosen = (f"; chosen by agreement with the mirror image on {len(images)} image(s): "
                  + ", ".join(f"{name} {value:.2f}" for name, value in agreement.items()))
        runner_up = close_call(agreement, spec)
        if runner_up:  # a close call: say which other file to name if it suits these cells better
            chosen += f" (a close call: pass --weights {runner_up} if that file is the one for these cells)"
    predictor = Predictor.from_weights(spec, device=args.device, overrides=_with_tta(args), **settings)
    used = describe_weights(spec)
    print(f"cellboxify {verb}: weights: {used}{chosen}", file=sys.stderr)
    return predictor, spec, used, agreement


def _version() -> str:
    from . import __version__

    return f"cellboxify {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0

    library_warning = warnings.showwarning

    def one_line(message, category, *rest, **kwargs):  # this package's warnings are one line, as its errors are
        if not category.__module__.startswith(__package__):
            return library_warning(message, category, *rest, **kwargs)
        print(f"cellboxify {args.verb}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    try:
        # train / evaluate / predict write into the folder --out; checked before any model is loaded
        if args.verb in ("train", "evaluate", "predict", "fine-tune"):
            check_folder(args.out, "--out")
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
                "fit-zoom": cmd_fit_zoom, "fine-tune": cmd_fine_tune}[
            args.verb
        ](args)
    except KeyboardInterrupt:
        print("cellboxify: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every expected input problem has a message; anything else still gets one line
        if os.environ.get("CELLBOXIFY_DEBUG"):
            raise
        print(f"cellboxify {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    finally:
        warnings.showwarning = library_warning  # main() may be called in a process that goes on (tests, scripts)


# ---- verbs ---------------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .recipes import training_run_config
    from .data.coco import CocoSource, add_pseudo_labels, load_coco
    from .train import Trainer
    from .progress import TqdmProgress

    from .weights import resolve_weights

    if args.init is not None:
        args.init = resolve_weights(args.init)
    config = training_run_config(args.out, args.config, resume=args.resume, init_weights=args.init,
                                 supervision=args.supervision, steps=args.steps, overrides=args.overrides)
    if args.device:
        config.train.device = args.device
        config.validate()
    coco = load_coco(args.data, args.images)
    for reason, count in coco.skipped.items():
        print(f"cellboxify train: skipped {count} annotation(s): {reason}", file=sys.stderr)
    source = CocoSource(coco, config, with_masks=config.loss.supervision == "mask")
    if len(source) == 0:
        raise ValueError(f"{args.data} has no image with a usable box")
    if (args.pseudo_labels is None) != (args.pseudo_images is None):
        raise ValueError("--pseudo-labels and --pseudo-images go together")
    if args.pseudo_labels is not None:
        source = add_pseudo_labels(source, args.pseudo_labels, args.pseudo_images, config)
        print(f"cellboxify train: {len(source.extra)} pseudo-labeled image(s), "
              f"{100 * source.extra_fraction:.0f}% of the samples", file=sys.stderr)
    cancel = threading.Event()
    progress = TqdmProgress(config.train.steps, disable=os.environ.get("RANK", "0") != "0")
    trainer = Trainer(config, source, args.out, init_weights=args.init, callbacks=[progress], cancel=cancel)
    if args.resume:
        if trainer.resume():
            print(f"cellboxify train: resumed at step {trainer.step}", file=sys.stderr)
            progress.start_at(trainer.step)
        else:
            print("cellboxify train: no checkpoint to resume, starting fresh", file=sys.stderr)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:  # Ctrl-C: keep what was trained
        trainer.save()
        print(f"cellboxify train: interrupted at step {trainer.step}; checkpoint saved", file=sys.stderr)
        return 130
    finally:
        progress.close()
    if trainer.world > 1:
        print(f"cellboxify train: rank {trainer.rank}/{trainer.world} finished {result.steps_done} steps",
              file=sys.stderr)
    if trainer.rank == 0:
        # a resumed run counts what this run trained, and says where the schedule stands
        resumed = f" (from step {result.first_step} to {result.steps_done} of {config.train.steps})" \
            if result.first_step else ""
        n = result.steps_this_run
        print(f"trained {n} step{'' if n == 1 else 's'}{resumed} in {result.wall_seconds:.0f} s; weights: {result.weights}")
    return 0


def cmd_evaluate(args) -> int:
    from .data.coco import load_coco
    from .evaluate import check_scorable, evaluate, oracle_box_iou
    from .flip_agreement import planes_to_choose_on
    from .io_utils import atomic_write_text
    from .progress import tqdm_callback

    coco = load_coco(args.data, args.images)
    for reason, count in coco.skipped.items():
        print(f"cellboxify evaluate: skipped {count} annotation(s): {reason}", file=sys.stderr)
    if not args.oracle_boxes:
        check_scorable(coco)  # before the weights load
    predictor, _, used, agreement = _predictor(
        args, "evaluate", lambda: planes_to_choose_on([image.path for image in coco.images]))
    with tqdm_callback(len(coco.images), "evaluate") as progress:
        if args.oracle_boxes:
            metrics = {"oracle_boxes": oracle_box_iou(predictor, coco, progress)}
        else:
            metrics = evaluate(predictor, coco, progress)
    metrics["weights"] = used
    if agreement:  # --weights auto: what chose them
        metrics["weights_agreement"] = agreement
    metrics["tta"] = predictor.tta  # the same weights score differently with test-time augmentation
    # what was left out of the score, so that metrics.json alone says what it measured
    metrics["skipped_annotations"] = dict(coco.skipped)
    for line in format_metrics(metrics):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "metrics.json", json.dumps(metrics, indent=2))
    return 0


def format_metrics(metrics: dict) -> list[str]:
    lines = []
    if "oracle_boxes" in metrics:
        o = metrics["oracle_boxes"]
        lines.append(f"oracle-box mean mask IoU (model): {o['mean_iou_model']:.4f}")
        lines.append(f"oracle-box mean mask IoU (filled box): {o['mean_iou_filled_box']:.4f}")
        lines.append(f"oracle-box mean mask IoU (inscribed ellipse): {o['mean_iou_ellipse']:.4f}")
        lines.append(f"cells: {o['num_cells']}")
        return lines
    for kind in ("bbox", "segm"):
        for name, value in metrics.get(kind, {}).items():
            lines.append(f"{kind} {name} (0-100, maxDets 2000): {value:.2f}")
    if "segm_skipped" in metrics:
        lines.append(f"segm AP not computed: {metrics['segm_skipped']}")
    for cell, values in metrics.get("per_cell_type", {}).items():
        lines.append(f"{cell}: " + "  ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in values.items()))
    return lines


def cmd_predict(args) -> int:
    from .batch import earlier_outputs, segment_files
    from .flip_agreement import planes_to_choose_on
    from .predict import iter_image_files
    from .progress import tqdm_callback

    files = iter_image_files(args.inputs)
    if not files:
        raise ValueError("no image files found in the given inputs")
    if not args.overwrite:
        earlier = earlier_outputs(args.out, files, args.format)
        if earlier:
            raise ValueError(f"{args.out} already holds {earlier[0].name}" + (f" and {len(earlier) - 1} more output(s)"
                             if len(earlier) > 1 else "") + " of an earlier run: choose another --out or pass --overwrite")
    predictor, _, _, _ = _predictor(args, "predict", lambda: planes_to_choose_on(files),
                                    score_threshold=args.score_threshold)
    with tqdm_callback(len(files), "predict") as progress:  # counts tiles: the total grows as they are found
        result = segment_files(predictor, files, args.out, args.format, tile=args.tile, overlap=args.overlap,
                               pixel_size=args.pixel_size, progress=progress)
    stacks = f", {result.planes} planes," if result.planes != result.files else ""
    # Say where the µm came from: a biologist comparing two runs' CSVs must know whether both were calibrated.
    sizes = ""
    if not args.pixel_size and {"csv", "tiff"} & args.format:
        sizes = ("; pixel size (µm) read from every file" if result.calibrated == result.files else
                 f"; pixel size (µm) read from {result.calibrated} of {result.files} files, the others in pixels only"
                 if result.calibrated else "; no pixel size in the files: sizes in pixels (give --pixel-size for µm)")
    print(f"segmented {result.files} image(s){stacks} into {args.out}: {result.cells} cell(s){sizes}")
    return 0


def cmd_export(args) -> int:
    from .checkpoint import config_from_checkpoint, read_checkpoint, save_weights
    from .model import build_model
    from .checkpoint import load_state

    source = args.source / "last.pt" if args.source.is_dir() else args.source
    data = read_checkpoint(source)
    config = config_from_checkpoint(data, source)
    model = build_model(config, load_pretrained=False)
    load_state(model, data["model"], source)
    save_weights(args.out, model, config, half=args.half, extra={"step": data.get("step")})
    print(f"wrote {args.out}")
    return 0


def cmd_fit_zoom(args) -> int:
    from .data.coco import boxed_images, load_coco
    from .flip_agreement import spread
    from .progress import tqdm_callback
    from .zoom_fit import ZOOM_FACTORS, fit_zoom

    boxed = boxed_images(load_coco(args.data, args.images))
    if not boxed:
        raise ValueError(f"{args.data} has no boxes: draw boxes around a few cells first")
    items = [(image, boxes) for _, image, boxes in boxed]
    # chosen on the boxed images already read, as predict would choose on them
    predictor, spec, _, _ = _predictor(args, "fit-zoom", lambda: [items[i][0] for i in spread(len(items))])
    with tqdm_callback(len(items) * len(ZOOM_FACTORS), "fit-zoom") as progress:
        fit = fit_zoom(predictor, items, progress=progress)
    for zoom, ap in sorted(fit.box_ap.items()):
        mark = "  <- best" if zoom == fit.zoom else ""
        print(f"zoom {zoom:.2f}: bbox AP against your boxes {ap:.2f}{mark}")
    # the zoom belongs to these weights: name them too, or predict's auto may choose another file
    print(f"use --weights {shlex.quote(str(spec))} --set model.image_scale={fit.zoom:g}")
    return 0


def cmd_fine_tune(args) -> int:
    from .finetune import boxes_from_coco, fine_tune

    if (args.out / "model.pt").exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds a fine-tuned model.pt: choose another --out or pass --overwrite")

    def say(line: str) -> None:
        print(f"cellboxify fine-tune: {line}", file=sys.stderr)

    items = boxes_from_coco(args.data, args.images, warn=say)
    report = fine_tune(items, args.out, weights=args.weights, minutes=args.minutes, device=args.device,
                       force=args.force, max_steps=args.max_steps, log=say)
    print(f"{report.summary()}; weights: {args.out / 'model.pt'}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
