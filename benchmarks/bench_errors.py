"""Where the detector fails: recall at strict overlaps, box size bias and score ranking, per LIVECell image.

COCO AP averages over IoU 0.50-0.95, so a model can find most cells (AP50) and still score low (AP) when its
boxes are loose. Per image of livecell-mini this reports, from the detections a model keeps (score >= 0.05):

- recall at IoU 0.5 / 0.75 / 0.9: the share of cells that *some* detection overlaps that well, at any score
  (what better scores alone could recover is bounded by it);
- the median IoU of each cell's best detection;
- width and height of the top-scored detection on each cell (IoU >= 0.3) relative to the cell's box: < 1 means
  the boxes are too small;
- the rank correlation of score and IoU over all detections.

Then, over each split, AP as it is and with every score replaced by the detection's best box IoU with a GT box:
an upper bound on what any rescoring (e.g. a learned localisation-quality head) could add. Last, what tighter
boxes alone could add to the masks: every detection that overlaps a cell (box IoU >= 0.3) is moved a fraction of
the way to that cell's box, its outline redrawn in the moved box, its score kept. At fraction 1 the boxes are
perfect (what a box-refinement stage such as Cascade R-CNN's could reach at best), so what that row still lacks
is owed to the outlines, the scores and the missed cells, not to loose boxes.

    python benchmarks/bench_errors.py [--weights W]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import livecell_mini_args, livecell_mini_missing, shown, write_section  # noqa: E402

RECALL_IOUS = (0.5, 0.75, 0.9)
REFINE_FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (no tie correction: scores and IoUs are continuous)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def image_errors(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> dict:
    """Error figures of one image's detections (XYXY ``boxes``, ``scores``) against its GT boxes ``gt``."""
    import torch
    from torchvision.ops import box_iou

    if len(gt) == 0 or len(boxes) == 0:  # nothing to match: every detection is a false positive, every cell missed
        nan = float("nan")
        return {"cells": len(gt), "detections": len(boxes), **{f"recall{t}": 0.0 if len(gt) else nan for t in RECALL_IOUS},
                "median_best_iou": 0.0 if len(gt) else nan, "width_ratio": nan, "height_ratio": nan,
                "best_iou_per_detection": np.zeros(len(boxes))}
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)).numpy()
    best_per_cell = iou.max(0)
    ratios = []
    for j in range(len(gt)):
        cand = np.flatnonzero(iou[:, j] >= 0.3)
        if len(cand):
            i = cand[np.argmax(scores[cand])]
            size_d, size_g = boxes[i, 2:] - boxes[i, :2], gt[j, 2:] - gt[j, :2]
            ratios.append(size_d / size_g)
    ratios = np.array(ratios) if ratios else np.full((1, 2), np.nan)
    return {
        "cells": len(gt), "detections": len(boxes),
        **{f"recall{t}": float((best_per_cell >= t).mean()) for t in RECALL_IOUS},
        "median_best_iou": float(np.median(best_per_cell)),
        "width_ratio": float(np.median(ratios[:, 0])), "height_ratio": float(np.median(ratios[:, 1])),
        "best_iou_per_detection": iou.max(1),
    }


def moved_toward_cells(boxes: np.ndarray, gt: np.ndarray, fraction: float, min_iou: float = 0.3) -> np.ndarray:
    """XYXY ``boxes`` moved ``fraction`` of the way (corner by corner) to the GT box each overlaps most, for
    those whose best box IoU is >= ``min_iou``; the rest (false positives) unchanged."""
    import torch
    from torchvision.ops import box_iou

    out = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    if len(out) == 0 or len(gt) == 0:
        return out
    iou = box_iou(torch.as_tensor(out, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)).numpy()
    hit = iou.max(1) >= min_iou
    target = np.asarray(gt, np.float32)[iou.argmax(1)[hit]]
    out[hit] += fraction * (target - out[hit])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.evaluate import cell_type, evaluate_detections, prediction_to_coco
    from napari_cellboxify.predict import Predictor

    predictor = Predictor.from_weights(args.weights, device="auto")
    rows = ["| split | image (cell type) | cells | detections | recall IoU ≥ 0.5 / 0.75 / 0.9 | median best IoU "
            "| width / height of top match | score-IoU rank corr. |", "|---|---|---|---|---|---|---|---|"]
    totals = ["| split | bbox AP | segm AP | bbox AP, scores = box IoU | segm AP, scores = box IoU |", "|---|---|---|---|---|"]
    refined = ["| split | boxes moved toward their cell's box by | bbox AP | segm AP | segm AP50 | segm AP75 |",
               "|---|---|---|---|---|---|"]
    for split in ("train", "val"):
        coco = load_coco(args.data / split / "annotations.json", args.data / split / "images")
        detections, rescored = [], []
        moved = {f: [] for f in REFINE_FRACTIONS}
        for entry in coco.images:
            image = read_image(entry.path)
            pred = predictor.segment_image(image, score_threshold=0.05)
            e = image_errors(pred.boxes_xyxy, pred.scores, entry.boxes_xyxy)
            found = " / ".join(f"{e[f'recall{t}']:.2f}" for t in RECALL_IOUS)
            rows.append(f"| {split} | {Path(entry.file_name).stem} ({cell_type(entry.file_name)}) | {e['cells']} "
                        f"| {e['detections']} | {found} | {e['median_best_iou']:.2f} "
                        f"| {e['width_ratio']:.2f} / {e['height_ratio']:.2f} "
                        f"| {rank_correlation(pred.scores, e['best_iou_per_detection']):.2f} |")
            coco_dets = prediction_to_coco(pred, entry.id)
            detections += coco_dets
            rescored += [dict(d, score=float(v)) for d, v in zip(coco_dets, e["best_iou_per_detection"])]
            for f in REFINE_FRACTIONS:
                outlined = predictor.segment_boxes(image, moved_toward_cells(pred.boxes_xyxy, entry.boxes_xyxy, f))
                outlined.scores = pred.scores
                moved[f] += prediction_to_coco(outlined, entry.id)
        now, bound = evaluate_detections(coco, detections), evaluate_detections(coco, rescored)
        for f in REFINE_FRACTIONS:
            r = evaluate_detections(coco, moved[f])
            refined.append(f"| {split} | {f:g} | {r['bbox']['AP']:.2f} | {r['segm']['AP']:.2f} "
                           f"| {r['segm']['AP50']:.2f} | {r['segm']['AP75']:.2f} |")
        totals.append(f"| {split} | {now['bbox']['AP']:.2f} | {now['segm']['AP']:.2f} | {bound['bbox']['AP']:.2f} "
                      f"| {bound['segm']['AP']:.2f} |")
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    body = (f"Detections of {weights} (score ≥ 0.05) on livecell-mini, one row per image; IoU is box IoU.\n\n"
            + "\n".join(rows) + "\n\nAP as it is, and with each detection's score replaced by its best box IoU "
            "with a GT box (an upper bound for rescoring; it needs the GT, so it is not a model):\n\n"
            + "\n".join(totals) + "\n\nTighter boxes, same detections and scores: each detection overlapping a "
            "cell (box IoU ≥ 0.3) moved that fraction of the way to the cell's box and outlined again there (0 = the "
            "model's own outlines in its own boxes; 1 = perfect boxes):\n\n" + "\n".join(refined))
    write_section("Where the detector fails", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
