"""Train on livecell-mini/train, score every ``--eval-every`` steps on val, keep the best checkpoint.

This is how the shipped default weights are made (weights/README.md): the Trainer of the CLI, plus model
selection on val (segm AP with LIVECell's settings; the oracle-box mask IoU is logged beside it). It stops by
itself after ``--minutes`` with a resumable checkpoint, so a long schedule runs as several invocations:

    python scripts/train_default_weights.py --config configs/livecell_gpu.yaml --out runs/default --minutes 8
    python scripts/train_default_weights.py --out runs/default --minutes 8        # resumes runs/default/last.pt
    python scripts/train_default_weights.py --config configs/livecell_cpu.yaml --init weights/X.pt --steps 400 \
        --out runs/finetune --eval-every 100                                      # a second phase from weights
    python scripts/train_default_weights.py --config configs/livecell_cpu.yaml --init runs/finetune/model.pt \
        --steps 300 --eval-every 50 --set train.trainable=polygon_head --set train.reset_polygon_head=true \
        --out runs/masks                          # a fresh mask branch on that fixed detector (weights/README.md)
    cellboxify predict ../shared/data/livecell-unlabeled/images --out runs/pseudo --format boxes \
        --score-threshold 0.05 --weights runs/masks/model.pt
    python scripts/train_default_weights.py --config configs/livecell_cpu.yaml --init runs/finetune/model.pt \
        --steps 1500 --pseudo-labels runs/pseudo/boxes.json --pseudo-images ../shared/data/livecell-unlabeled/images \
        --out runs/self                           # self-training with those boxes (then a fresh mask branch again)

Writes into --out: last.pt / model.pt (Trainer), val_log.jsonl (one line per evaluation), best.pt (the weights
with the highest val segm AP so far, its step and metrics inside). With ``--set train.ema_decay=0.998`` the
figures are the weight average's (what model.pt holds) and val_log.jsonl adds the last step's as ``raw_*``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "livecell-mini"


def evaluate_on_val(model, val, device) -> dict:
    from napari_cellboxify.evaluate import evaluate, oracle_box_iou
    from napari_cellboxify.predict import Predictor

    was_training = model.training
    try:
        predictor = Predictor(model, device, score_threshold=0.05)
        with torch.no_grad():
            metrics = evaluate(predictor, val)
            metrics["oracle_boxes"] = oracle_box_iou(predictor, val)
    finally:
        model.train(was_training)
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path,
                        help="config (default: a resumed run keeps its own, a new run the defaults)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/ and val/ (COCO + images)")
    parser.add_argument("--supervision", choices=["box", "mask"], default=None)
    parser.add_argument("--init", type=Path, help="start from these weights (pairwise terms at full weight at once)")
    parser.add_argument("--steps", type=int, help="schedule length (overrides the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set loss.unary_weight=4 (repeatable)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop (resumably) after this long")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pseudo-labels", type=Path, help="self-training boxes (cellboxify predict --format boxes)")
    parser.add_argument("--pseudo-images", type=Path, help="folder of the --pseudo-labels images")
    args = parser.parse_args(argv)

    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.recipes import training_run_config
    from napari_cellboxify.data.coco import CocoSource, add_pseudo_labels, load_coco
    from napari_cellboxify.device import pick_device
    from napari_cellboxify.train import Trainer

    for split in ("train", "val"):
        if not (args.data / split / "annotations.json").exists():
            print(f"skipped: {args.data / split} not found (see ../shared/data/README.md)")
            return 0
    # Every invocation of a run resumes it: its own config.json unless --config is given.
    config = training_run_config(args.out, args.config, resume=True, supervision=args.supervision, steps=args.steps,
                                 overrides=args.overrides)
    device = pick_device(args.device)
    train = load_coco(args.data / "train" / "annotations.json", args.data / "train" / "images")
    val = load_coco(args.data / "val" / "annotations.json", args.data / "val" / "images")
    source = CocoSource(train, config, with_masks=config.loss.supervision == "mask")
    if args.pseudo_labels:
        source = add_pseudo_labels(source, args.pseudo_labels, args.pseudo_images, config)
        print(f"{len(source.extra)} pseudo-labeled images, {100 * source.extra_fraction:.0f}% of the samples", flush=True)

    cancel = threading.Event()
    deadline = time.time() + 60 * args.minutes
    trainer = Trainer(config, source, args.out, init_weights=args.init, cancel=cancel, device=device)
    if trainer.resume():
        print(f"resumed at step {trainer.step}", flush=True)
    log_path = args.out / "val_log.jsonl"
    best = max((json.loads(line)["segm_AP"] for line in log_path.read_text().splitlines() if line),
               default=-1.0) if log_path.exists() else -1.0
    t0, last_report = time.time(), time.time()
    for info in trainer.iter_steps():
        if time.time() > deadline:
            cancel.set()
        if time.time() - last_report > 30:
            terms = " ".join(f"{k}={v:.3f}" for k, v in info.terms.items())
            print(f"step {info.step}/{info.total_steps} loss {info.loss:.3f} ({terms}) {info.seconds:.2f} s/step", flush=True)
            last_report = time.time()
        if info.step % args.eval_every == 0 or info.step == info.total_steps:
            te = time.time()
            m = evaluate_on_val(trainer.inference_model, val, device)
            record = {"step": info.step, "segm_AP": m["segm"]["AP"], "segm_AP50": m["segm"]["AP50"],
                      "bbox_AP": m["bbox"]["AP"], "oracle_iou": m["oracle_boxes"]["mean_iou_model"],
                      "per_type_segm_AP": {k: v["segm_AP"] for k, v in m.get("per_cell_type", {}).items()},
                      "train_seconds": time.time() - t0}
            if trainer.ema is not None:  # the figures above are the weight average's; these the last step's
                raw = evaluate_on_val(trainer.model, val, device)
                record.update(raw_segm_AP=raw["segm"]["AP"], raw_bbox_AP=raw["bbox"]["AP"],
                              raw_oracle_iou=raw["oracle_boxes"]["mean_iou_model"])
            record["eval_seconds"] = time.time() - te
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"val @ {info.step}: segm AP {record['segm_AP']:.2f} AP50 {record['segm_AP50']:.2f} bbox AP "
                  f"{record['bbox_AP']:.2f} oracle IoU {record['oracle_iou']:.3f} ({record['eval_seconds']:.0f} s)",
                  flush=True)
            if trainer.ema is not None:
                print(f"  last step's weights: segm AP {record['raw_segm_AP']:.2f} bbox AP {record['raw_bbox_AP']:.2f} "
                      f"oracle IoU {record['raw_oracle_iou']:.3f}", flush=True)
            if record["segm_AP"] > best:
                best = record["segm_AP"]
                save_weights(args.out / "best.pt", trainer.inference_model, config, extra={"step": info.step, "val": record})
    result = trainer.result
    print(f"stopped at step {result.steps_done}/{config.train.steps} after {result.wall_seconds:.0f} s "
          f"({'time budget' if result.cancelled else 'schedule done'}); best val segm AP {best:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
