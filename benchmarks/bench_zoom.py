"""How much the zoom matters: one set of weights run at several values of ``model.image_scale`` on livecell-mini.

The zoom (the *Zoom* box of the panel, ``--set model.image_scale=Z`` on the command line) is the one setting a
user must match to their magnification. For each split and zoom this segments every image and reports bbox /
segm AP (LIVECell's COCO settings), segm AP75, segm AP per cell type, detections per image (score >= 0.5) and
the time per image. Then zooms chosen per image: "best" is the zoom that scored best on the image's own masks
(an upper bound for any rule that picks a zoom per image); "fit-zoom" is what the panel's *Fit zoom to my boxes*
(zoom_fit.py) picks from boxes only, given all of the image's boxes, or only the boxes of the cells in one
quarter of it (top-left, the corner a user might box), and the whole image is then segmented at that zoom.

    python benchmarks/bench_zoom.py [--weights W] [--zooms 0.75 1 1.25 1.5 1.75 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (  # noqa: E402
    livecell_mini_args, livecell_mini_missing, segm_ap_per_type, segment_timed, shown, write_section, zooms_by_image,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.evaluate import coco_eval, evaluate_detections, prediction_to_coco
    from napari_cellboxify.predict import Predictor
    from napari_cellboxify.zoom_fit import fit_zoom

    predictor = Predictor.from_weights(args.weights, device=args.device)
    own_zoom = predictor.image_scale
    rows = ["| split | zoom | bbox AP | segm AP | segm AP75 | segm AP per cell type | detections ≥ 0.5 / image "
            "| s / image |", "|---|---|---|---|---|---|---|---|"]
    best_rows = []
    for split in ("train", "val"):
        coco = load_coco(args.data / split / "annotations.json", args.data / split / "images")
        gt = coco.pycocotools()  # load_coco has given every annotation the area COCOeval needs
        images = [read_image(entry.path) for entry in coco.images]
        per_image: dict[int, list[tuple[float, float, list[dict]]]] = {entry.id: [] for entry in coco.images}
        for zoom in args.zooms:
            predictor.image_scale = zoom
            predictions, seconds = segment_timed(predictor, images)
            detections, counts = [], []
            for entry, pred in zip(coco.images, predictions):
                counts.append(int((pred.scores >= 0.5).sum()))
                dets = prediction_to_coco(pred, entry.id)
                per_image[entry.id].append((coco_eval(gt, dets, "segm", [entry.id], sizes=False)["AP"], zoom, dets))
                detections += dets
            m = evaluate_detections(coco, detections)
            per_type = segm_ap_per_type(m)
            mark = " (the weights' own)" if zoom == own_zoom else ""
            rows.append(f"| {split} | {zoom:g}{mark} | {m['bbox']['AP']:.2f} | {m['segm']['AP']:.2f} "
                        f"| {m['segm']['AP75']:.2f} | {per_type} | {np.mean(counts):.0f} "
                        f"| {np.mean(seconds):.2f} |")
            print(rows[-1], flush=True)
        best = [max(options, key=lambda o: o[0]) for options in per_image.values()]
        choices = {"best (own masks)": [(zoom, dets) for _, zoom, dets in best]}
        predictor.image_scale = own_zoom
        for label, quarter in (("fit-zoom, all boxes", False), ("fit-zoom, boxes of a quarter", True)):
            picked = []
            for entry, image in zip(coco.images, images):
                boxes = entry.boxes_xyxy
                if quarter:
                    h, w = image.shape[:2]
                    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
                    boxes = boxes[(centre[:, 0] < w / 2) & (centre[:, 1] < h / 2)]
                zoom = fit_zoom(predictor, [(image, boxes)]).zoom if len(boxes) else own_zoom
                done = {z: dets for _, z, dets in per_image[entry.id]}
                if zoom not in done:
                    predictor.image_scale = zoom
                    done[zoom] = prediction_to_coco(predictor.segment_image(image, score_threshold=0.05), entry.id)
                    predictor.image_scale = own_zoom
                picked.append((zoom, done[zoom]))
            choices[label] = picked
        for label, picked in choices.items():
            pooled = coco_eval(gt, [d for _, dets in picked for d in dets], "segm", sizes=False)["AP"]
            chosen = zooms_by_image(coco.images, [zoom for zoom, _ in picked])
            best_rows.append(f"| {split} | {label} | {pooled:.2f} | {chosen} |")
            print(best_rows[-1], flush=True)
    predictor.image_scale = own_zoom
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    body = (f"{weights} (trained at zoom {own_zoom:g}) on livecell-mini at each zoom; score ≥ 0.05, LIVECell's COCO "
            "settings, AP in %; time: `segment_image` per image on the machine above.\n\n" + "\n".join(rows)
            + "\n\nA zoom chosen per image, the whole split then pooled (segm AP); *best* uses each image's own "
            "masks (an upper bound), *fit-zoom* only boxes (all of the image's, or those of the cells in its "
            "top-left quarter):\n\n"
            "| split | zoom chosen by | pooled segm AP | zoom chosen per image |\n|---|---|---|---|\n"
            + "\n".join(best_rows))
    write_section("Zoom sensitivity", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
