"""Test-time augmentation: what "flips" and "flips+scales" add on livecell-mini, and what they cost.

For each split and each setting of ``model.tta`` (off, flips, flips+scales) this segments every image with the
same weights and reports bbox / segm AP (LIVECell's COCO settings), AP50, AP75, segm AP per cell type and the
mean time per image (``Predictor.segment_image`` only, side by side in one run, so the ratio is the cost). Then
the oracle-box mean mask IoU on val with outlines from one view and averaged over the 8 flips.

The settings were chosen on train (fusion IoU, views); val is reported as it came.

With ``--fit-zoom`` each image is first given the zoom fitted to its own boxes (zoom_fit.py: what the panel's
*Fit zoom to my boxes* and ``cellboxify fit-zoom`` choose, boxes only, never masks) and every setting runs at that
zoom: the best a user who boxed their images gets without training. Its figures go to a section of their own.

    python benchmarks/bench_tta.py [--weights W] [--device cuda] [--splits val] [--fit-zoom]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (  # noqa: E402
    livecell_mini_args, livecell_mini_missing, segment_timed, segm_ap_per_type, shown, write_section, zooms_by_image,
)

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"],
                        help="splits to segment (val alone for a short GPU run)")
    parser.add_argument("--fit-zoom", action="store_true",
                        help="segment each image at the zoom fitted to its boxes (no oracle-box table)")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.evaluate import evaluate_detections, oracle_box_iou, prediction_to_coco
    from napari_cellboxify.config import TTA_MODES
    from napari_cellboxify.predict import Predictor
    from napari_cellboxify.zoom_fit import fit_zoom

    predictor = Predictor.from_weights(args.weights, device=args.device)
    rows = ["| split | TTA | bbox AP | segm AP | segm AP50 | segm AP75 | segm AP per cell type | s / image | × off |",
            "|---|---|---|---|---|---|---|---|---|"]
    fitted = ["| split | zoom fitted to each image's boxes |", "|---|---|"]
    for split in args.splits:
        coco = load_coco(args.data / split / "annotations.json", args.data / split / "images")
        images = [read_image(entry.path) for entry in coco.images]
        zooms = None
        if args.fit_zoom:  # fit_zoom detects on one view whatever the TTA setting, as the panel's button does
            zooms = [fit_zoom(predictor, [(image, entry.boxes_xyxy)]).zoom for entry, image in zip(coco.images, images)]
            fitted.append(f"| {split} | {zooms_by_image(coco.images, zooms)} |")
        base_time = None
        for mode in TTA_MODES:
            predictor.tta = mode
            predictions, seconds = segment_timed(predictor, images, zooms)
            detections = [d for entry, pred in zip(coco.images, predictions)
                          for d in prediction_to_coco(pred, entry.id)]
            m = evaluate_detections(coco, detections)
            per_type = segm_ap_per_type(m)
            mean_time = float(np.mean(seconds))
            base_time = base_time or mean_time
            rows.append(f"| {split} | {mode} | {m['bbox']['AP']:.2f} | {m['segm']['AP']:.2f} | {m['segm']['AP50']:.2f} "
                        f"| {m['segm']['AP75']:.2f} | {per_type} | {mean_time:.2f} | {mean_time / base_time:.1f} |")
            print(rows[-1], flush=True)
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    device = predictor.device.type
    if args.fit_zoom:
        body = (f"{weights} on livecell-mini, each image at the zoom fitted to its own boxes (`zoom_fit.py`; the "
                f"weights' own zoom is {predictor.image_scale:g}), then each setting of `model.tta`; score ≥ 0.05, "
                "LIVECell's COCO settings, AP in %. Time: `segment_image` per image at its zoom (the fit not "
                "included), mean over the split; × off is the ratio to one pass in the same run.\n\n"
                + "\n".join(rows) + "\n\nZooms fitted (boxes only):\n\n" + "\n".join(fitted))
        write_section("Test-time augmentation at the fitted zoom" + (f" ({device})" if device != "cpu" else ""), body)
        return 0
    oracle = ["| outlines of the GT boxes | mean mask IoU | filled box | inscribed ellipse |", "|---|---|---|---|"]
    val = load_coco(args.data / "val" / "annotations.json", args.data / "val" / "images")
    for mode in ("off", "flips"):
        predictor.tta = mode
        o = oracle_box_iou(predictor, val)
        label = "one view" if mode == "off" else "mean of the 8 flips"
        oracle.append(f"| {label} | {o['mean_iou_model']:.3f} | {o['mean_iou_filled_box']:.3f} "
                      f"| {o['mean_iou_ellipse']:.3f} |")
    body = (f"{weights} on livecell-mini, each setting of `model.tta` (`--tta` on `predict`/`evaluate`, "
            "*Test-time augmentation* in the panel); score ≥ 0.05, LIVECell's COCO settings, AP in %. Time: "
            "`segment_image` per image, mean over the split, on the machine above; × off is the ratio to one "
            "pass in the same run.\n\n" + "\n".join(rows)
            + "\n\nOracle boxes (val): the outline of each GT box from one view and averaged over the 8 flips:\n\n"
            + "\n".join(oracle))
    # A GPU run gets its own section: the CPU figures (the cost a biologist without a GPU pays) stay beside it.
    write_section("Test-time augmentation" + (f" ({device})" if device != "cpu" else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
