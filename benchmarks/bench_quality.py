"""Quality on livecell-mini: box-only vs full-mask training of the same net, same budget; oracle-box IoU.

Trains (or resumes) two runs with the same config and steps — ``RUNS/bench_box`` (boxes only) and
``RUNS/bench_mask`` (full masks) — on ``livecell-mini/train``, evaluates both on ``livecell-mini/val`` with
LIVECell's COCO settings, and writes segm/bbox AP of each, their ratio, per-cell-type AP, and the oracle-box
mean mask IoU beside the filled-box and inscribed-ellipse baselines. CPU training is slow: run it again and it
resumes each run from its last checkpoint up to ``--steps``.

With ``--init WEIGHTS`` both runs start from the same trained weights (``RUNS/bench_box_init``,
``RUNS/bench_mask_init``) and the table gets its own section: what full masks add over boxes for the same
fine-tuning budget, affordable on a CPU where two from-scratch runs are not.

    python benchmarks/bench_quality.py --steps 2000 [--config configs/livecell_cpu.yaml] [--eval-only]
    python benchmarks/bench_quality.py --steps 100 --init weights/cellboxify_livecell_boxes.pt \
        --also weights/cellboxify_livecell_boxes.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import shown, write_section  # noqa: E402

from napari_cellboxify.checkpoint import load_model  # noqa: E402
from napari_cellboxify.config import CellBoxifyConfig  # noqa: E402
from napari_cellboxify.data.coco import CocoSource, load_coco  # noqa: E402
from napari_cellboxify.evaluate import evaluate, oracle_box_iou  # noqa: E402
from napari_cellboxify.predict import Predictor  # noqa: E402
from napari_cellboxify.train import Trainer, read_loss_log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "livecell-mini"


def train_run(config: CellBoxifyConfig, supervision: str, run: Path, steps: int, init: Path | None) -> None:
    config = CellBoxifyConfig.from_dict(config.to_dict())
    config.loss.supervision = supervision
    config.train.steps = steps
    coco = load_coco(DATA / "train" / "annotations.json", DATA / "train" / "images")
    trainer = Trainer(config, CocoSource(coco, config, with_masks=supervision == "mask"), run, init_weights=init)
    if trainer.resume():
        print(f"{run.name}: resumed at step {trainer.step}")
    if trainer.step < steps:
        trainer.fit()


def evaluate_run(run: Path) -> dict:
    """``run`` is a run folder (its model.pt and loss log) or a weights file (no train time known)."""
    weights = run if run.is_file() else run / "model.pt"
    model, data = load_model(weights)
    predictor = Predictor(model, "auto")
    val = load_coco(DATA / "val" / "annotations.json", DATA / "val" / "images")
    metrics = evaluate(predictor, val)
    metrics["oracle_boxes"] = oracle_box_iou(predictor, val)
    metrics["steps"] = int(data.get("step") or 0)
    metrics["train_hours"] = None
    if run.is_dir():
        log = read_loss_log(run / "loss_log.jsonl")
        # logged steps are every log_every-th step: scale their mean duration to all steps (a fine-tune counts
        # its own steps from 0)
        metrics["train_hours"] = (sum(r["seconds"] for r in log) / max(1, len(log))) * metrics["steps"] / 3600
        (run / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "livecell_cpu.yaml")
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--init", type=Path, default=None,
                        help="start both runs from these weights (runs bench_box_init / bench_mask_init)")
    parser.add_argument("--also", type=Path, nargs="*", default=[],
                        help="more run folders (with model.pt) or weights files to evaluate into the same table, "
                             "e.g. the default weights")
    parser.add_argument("--note", default="", help="a line written under the table (how the extra runs trained)")
    parser.add_argument("--section", default=None,
                        help="RESULTS.md section to write (default: named after --init), so that a comparison of "
                             "other runs does not replace an earlier one")
    args = parser.parse_args()
    if not (DATA / "train" / "annotations.json").exists():
        sys.exit(f"LIVECell mini data not found at {DATA}")
    config = CellBoxifyConfig.load(args.config)
    suffix = "_init" if args.init else ""
    runs = {"box": args.runs / f"bench_box{suffix}", "mask": args.runs / f"bench_mask{suffix}"}
    if not args.eval_only:
        for supervision, run in runs.items():
            train_run(config, supervision, run, args.steps, args.init)
    runs.update({run.name: run for run in args.also})
    results = {k: evaluate_run(run) for k, run in runs.items() if run.is_file() or (run / "model.pt").exists()}
    start = f"both runs fine-tuned from `{shown(args.init)}`" if args.init else "both runs from scratch"
    lines = [f"Config `{shown(args.config)}`, {start}, train on livecell-mini/train (10 images), "
             "evaluate on livecell-mini/val (5 images, 892 cells), LIVECell COCO settings, AP in %.", "",
             "| run (supervision) | steps | train time (h) | bbox AP | segm AP | segm AP50 | oracle-box mask IoU |",
             "|---|---|---|---|---|---|---|"]
    for kind, m in results.items():
        hours = "-" if m["train_hours"] is None else f"{m['train_hours']:.2f}"
        lines.append(f"| {kind} | {m['steps']} | {hours} | {m['bbox']['AP']:.2f} | {m['segm']['AP']:.2f} "
                     f"| {m['segm']['AP50']:.2f} | {m['oracle_boxes']['mean_iou_model']:.3f} |")
    if args.note:
        lines += ["", args.note]
    same_budget = "box" in results and "mask" in results and results["box"]["steps"] == results["mask"]["steps"]
    if same_budget and results["mask"]["segm"]["AP"] > 0:
        ratio = results["box"]["segm"]["AP"] / results["mask"]["segm"]["AP"]
        lines += ["", f"**box-only / full-mask segm AP ratio: {ratio:.3f}** (paper, full LIVECell: 0.834)"]
    any_run = next(iter(results.values()), None)
    if any_run:
        o = any_run["oracle_boxes"]
        lines += ["", f"Baselines with the GT boxes on val ({o['num_cells']} cells): filled box "
                      f"{o['mean_iou_filled_box']:.3f}, inscribed ellipse {o['mean_iou_ellipse']:.3f} mean mask IoU."]
        per_type = any_run.get("per_cell_type", {})
        if per_type:
            lines += ["", "| cell type | " + " | ".join(f"{k} segm AP" for k in results) + " |",
                      "|---|" + "---|" * len(results)]
            for cell in per_type:
                lines.append(f"| {cell} | " + " | ".join(f"{r['per_cell_type'][cell]['segm_AP']:.2f}"
                                                        for r in results.values()) + " |")
    title = args.section or "Quality on livecell-mini (box-only vs full-mask" + (
        ", same start weights)" if args.init else ")")
    write_section(title, "\n".join(lines))


if __name__ == "__main__":
    main()
