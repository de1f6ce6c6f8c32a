"""Refinement passes at inference: what running the polygon head's stages again adds, and what it costs.

The weights' mask branch is trained with one pass of its refinement stages; ``model.refine_passes`` runs them again
at inference, each pass from the last one's polygons. For 1, 2 and 3 passes this segments every livecell-mini image
with the same weights (``--set model.refine_passes=N`` in the CLI) and reports bbox / segm AP (LIVECell's COCO
settings), AP50, AP75, segm AP per cell type, the oracle-box mean mask IoU (GT boxes outlined) and the mean time per
image (``Predictor.segment_image`` only, side by side in one run, so the ratio is the cost).

The number of passes was chosen on train; val is reported as it came.

    python benchmarks/bench_refine_passes.py [--weights W] [--device cuda] [--passes 1 2 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (  # noqa: E402
    livecell_mini_args, livecell_mini_missing, livecell_mini_splits, segment_timed, segm_ap_per_type, shown,
    write_section,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--passes", nargs="+", type=int, default=[1, 2, 3], help="numbers of passes to compare")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.evaluate import evaluate_detections, oracle_box_iou, prediction_to_coco
    from napari_cellboxify.predict import Predictor

    splits = livecell_mini_splits(args.data)
    rows = ["| split | passes | bbox AP | segm AP | segm AP50 | segm AP75 | segm AP per cell type | oracle-box IoU "
            "| s / image | × first |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split, (coco, images) in splits.items():
        base_time = None
        for passes in args.passes:
            predictor = Predictor.from_weights(args.weights, device=args.device,
                                               overrides=[f"model.refine_passes={passes}"])
            predictions, seconds = segment_timed(predictor, images)
            detections = [d for entry, pred in zip(coco.images, predictions)
                          for d in prediction_to_coco(pred, entry.id)]
            m = evaluate_detections(coco, detections)
            oracle = oracle_box_iou(predictor, coco)["mean_iou_model"]
            per_type = segm_ap_per_type(m)
            mean_time = float(np.mean(seconds))
            base_time = base_time or mean_time
            rows.append(f"| {split} | {passes} | {m['bbox']['AP']:.2f} | {m['segm']['AP']:.2f} "
                        f"| {m['segm']['AP50']:.2f} | {m['segm']['AP75']:.2f} | {per_type} | {oracle:.3f} "
                        f"| {mean_time:.2f} | {mean_time / base_time:.2f} |")
            print(rows[-1], flush=True)
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    body = (f"{weights} on livecell-mini with the polygon head's refinement stages run 1, 2 or 3 times at "
            "inference (`--set model.refine_passes=N`; the mask branch was trained with one pass); score ≥ 0.05, "
            "LIVECell's COCO settings, AP in %. Oracle-box IoU: mean mask IoU of the outlines of the GT boxes. "
            "Time: `segment_image` per image, mean over the split, on the machine above; × first is the ratio to "
            f"the first row of the split in the same run.\n\n" + "\n".join(rows))
    device = predictor.device.type
    write_section("Refinement passes at inference" + (f" ({device})" if device != "cpu" else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
