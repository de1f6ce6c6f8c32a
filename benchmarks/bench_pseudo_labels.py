"""How good are a model's boxes as pseudo-labels? Precision and recall of its detections per score threshold.

Self-training (``cellboxify train --pseudo-labels``) takes boxes scoring >= ``data.pseudo_score_thresh`` as
cells and those down to ``data.pseudo_ignore_thresh`` as ignore regions. This measures, on images with GT boxes,
what each threshold gives: the share of kept boxes that lie on a cell (IoU >= 0.5 with some GT box), the share
of cells found that way, and the share of cells a kept box touches at all (IoU >= 0.3: the cells an ignore
region keeps from being taught as background). Choose the thresholds on ``train``; ``val`` is shown beside it.

    python benchmarks/bench_pseudo_labels.py [--weights W] [--tta flips+scales]

With ``--tta`` the boxes are those of test-time augmentation (``cellboxify predict --tta``), in a section of
their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import livecell_mini_args, livecell_mini_missing, shown, write_section  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def threshold_table(predictor, coco, thresholds=THRESHOLDS) -> list[dict]:
    """One row per threshold: boxes kept, precision@0.5, recall@0.5, cells touched@0.3 (all detections pooled)."""
    import torch
    from torchvision.ops import box_iou

    from napari_cellboxify.data.images import read_image

    pooled = []  # per image: (detection scores, IoU matrix detections x GT boxes)
    n_cells = 0
    for entry in coco.images:
        pred = predictor.segment_image(read_image(entry.path), score_threshold=min(thresholds))
        gt = torch.from_numpy(entry.boxes_xyxy)
        iou = box_iou(torch.from_numpy(pred.boxes_xyxy), gt) if len(pred) and len(gt) else torch.zeros(len(pred), len(gt))
        pooled.append((pred.scores, iou))
        n_cells += len(gt)
    rows = []
    for t in thresholds:
        kept = hit = found = touched = 0
        for scores, iou in pooled:
            sel = iou[torch.from_numpy(scores >= t)]
            kept += len(sel)
            if len(sel) and sel.shape[1]:
                hit += int((sel.max(1).values >= 0.5).sum())
                found += int((sel.max(0).values >= 0.5).sum())
                touched += int((sel.max(0).values >= 0.3).sum())
        rows.append({"threshold": t, "boxes": kept, "precision": hit / max(1, kept), "recall": found / max(1, n_cells),
                     "touched": touched / max(1, n_cells), "cells": n_cells})
    return rows


def main(argv=None) -> int:
    from napari_cellboxify.config import TTA_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    parser.add_argument("--tta", choices=TTA_MODES, default="off",
                        help="test-time augmentation of the boxes (default off)")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.predict import Predictor

    predictor = Predictor.from_weights(args.weights, device="auto")
    predictor.tta = args.tta
    lines = ["| split | score ≥ | boxes | precision (IoU ≥ 0.5) | cells found (IoU ≥ 0.5) | cells touched (IoU ≥ 0.3) |",
             "|---|---|---|---|---|---|"]
    for split in ("train", "val"):
        coco = load_coco(args.data / split / "annotations.json", args.data / split / "images")
        for r in threshold_table(predictor, coco):
            lines.append(f"| {split} ({r['cells']} cells) | {r['threshold']:.1f} | {r['boxes']} | {r['precision']:.3f} "
                         f"| {r['recall']:.3f} | {r['touched']:.3f} |")
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    with_tta = "" if args.tta == "off" else f" with test-time augmentation ({args.tta})"
    body = (f"Detections of {weights}{with_tta} on livecell-mini, pooled over each split's images; a detection counts as "
            "precise when it overlaps some GT box by IoU ≥ 0.5, a cell as found when some kept box does.\n\n"
            + "\n".join(lines))
    name = "Pseudo-label quality per score threshold" + ("" if args.tta == "off" else f" (TTA {args.tta})")
    write_section(name, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
