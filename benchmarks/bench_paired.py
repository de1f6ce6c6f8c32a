"""Are the inference settings' gains consistent from image to image? Paired per-image segm AP on livecell-mini.

RESULTS.md reports each setting's AP over a split; val has 5 images (one per cell type), train 10, and run-to-run
noise of training is about ±0.8 AP. A reviewer asks whether a gain of +0.6 (a second refinement pass), +1.1 / +1.5
(test-time augmentation) or +2 (the zoom fitted to the user's boxes) holds on most images or comes from one. This
segments every train and val image once per setting with the same weights, scores each image on its own (segm AP,
LIVECell's COCO settings) and, for each setting against its baseline, reports: on how many images it gains, a
two-sided sign test, and the mean per-image difference with a 95 % bootstrap interval over images (10,000
resamples). The split-level AP difference (what the other tables report) is given beside it.

    python benchmarks/bench_paired.py [--weights W] [--device cuda] [--settings ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (  # noqa: E402
    livecell_mini_args, livecell_mini_missing, livecell_mini_splits, segment_timed, shown, write_section,
)

# name: (refine passes, TTA, zoom fitted to each image's boxes)
SETTINGS = {
    "one pass": (1, "off", False),
    "shipped": (2, "off", False),
    "flips": (2, "flips", False),
    "flips+scales": (2, "flips+scales", False),
    "fitted zoom": (2, "off", True),
}
# (variant, baseline, what the variant adds)
COMPARISONS = [
    ("shipped", "one pass", "two refinement passes (shipped)"),
    ("flips", "shipped", "TTA flips"),
    ("flips+scales", "shipped", "TTA flips+scales"),
    ("fitted zoom", "shipped", "zoom fitted to each image's boxes"),
]


def paired_summary(variant: np.ndarray, baseline: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """Per-image differences of two settings: wins, losses, sign-test p, mean difference and its 95 % interval.

    The interval resamples *images* (the unit that varies: cell type, density, focus), not cells, so it says how
    much the mean gain could move with another draw of images like these.
    """
    from scipy.stats import binomtest

    diff = np.asarray(variant, float) - np.asarray(baseline, float)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    draws = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    means = diff[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"n": len(diff), "wins": wins, "losses": losses, "p": float(p), "mean": float(diff.mean()),
            "low": float(low), "high": float(high)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    livecell_mini_args(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="settings to run (a comparison needs both of its settings)")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.evaluate import coco_eval, evaluate_detections, prediction_to_coco
    from napari_cellboxify.predict import Predictor
    from napari_cellboxify.zoom_fit import fit_zoom

    splits = livecell_mini_splits(args.data)
    predictors = {passes: Predictor.from_weights(args.weights, device=args.device,
                                                 overrides=[f"model.refine_passes={passes}"])
                  for passes in sorted({SETTINGS[name][0] for name in args.settings})}
    zooms = {}
    if any(SETTINGS[name][2] for name in args.settings):  # boxes only, one view, as the panel's button does
        fitter = predictors[max(predictors)]
        for split, (coco, images) in splits.items():
            zooms[split] = [fit_zoom(fitter, [(image, entry.boxes_xyxy)]).zoom
                            for entry, image in zip(coco.images, images)]
            print(split, "fitted zooms", zooms[split], flush=True)
    per_image: dict[str, dict[str, list[float]]] = {}  # setting -> split -> segm AP of each image
    split_ap: dict[str, dict[str, float]] = {}
    for name in args.settings:
        passes, tta, fitted = SETTINGS[name]
        predictor = predictors[passes]
        predictor.tta = tta
        per_image[name], split_ap[name] = {}, {}
        for split, (coco, images) in splits.items():
            predictions, _ = segment_timed(predictor, images, zooms[split] if fitted else None)
            detections = [[d for d in prediction_to_coco(pred, entry.id)] for entry, pred in zip(coco.images, predictions)]
            gt = coco.pycocotools()
            per_image[name][split] = [coco_eval(gt, dets, "segm", [entry.id], sizes=False)["AP"]
                                      for entry, dets in zip(coco.images, detections)]
            split_ap[name][split] = evaluate_detections(coco, [d for dets in detections for d in dets])["segm"]["AP"]
            print(name, split, f"{split_ap[name][split]:.2f}", [f"{v:.1f}" for v in per_image[name][split]], flush=True)
        predictor.tta = "off"

    rows = ["| setting vs baseline | split | images gaining | sign test p | mean per-image Δ segm AP [95 % interval] "
            "| split segm AP Δ |", "|---|---|---|---|---|---|"]
    for variant, baseline, label in COMPARISONS:
        if variant not in per_image or baseline not in per_image:
            continue
        for split in (*splits, "both"):
            names = list(splits) if split == "both" else [split]
            v = np.concatenate([per_image[variant][s] for s in names])
            b = np.concatenate([per_image[baseline][s] for s in names])
            s = paired_summary(v, b)
            whole = ("" if split == "both" else
                     f"{split_ap[variant][split] - split_ap[baseline][split]:+.2f} "
                     f"({split_ap[baseline][split]:.2f} → {split_ap[variant][split]:.2f})")
            rows.append(f"| {label} vs {baseline} | {split} | {s['wins']} of {s['n']} ({s['losses']} lose) "
                        f"| {s['p']:.3f} | {s['mean']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}] | {whole} |")
    images = ["| image | split | " + " | ".join(args.settings) + " |", "|---|---|" + "---|" * len(args.settings)]
    for split, (coco, _) in splits.items():
        for i, entry in enumerate(coco.images):
            images.append(f"| {Path(entry.file_name).stem} | {split} | "
                          + " | ".join(f"{per_image[n][split][i]:.1f}" for n in args.settings) + " |")
    weights = shown(args.weights) if args.weights else "the shipped default weights"
    body = (f"{weights}; every livecell-mini image segmented once per setting (score ≥ 0.05) and scored on its own "
            "(segm AP, LIVECell's COCO settings, in %). *one pass*: `model.refine_passes=1`; *shipped*: two passes, "
            "no TTA; *flips*, *flips+scales*: `model.tta`; *fitted zoom*: each image at the zoom that *Fit zoom to "
            "my boxes* picks from that image's own boxes (boxes only). Sign test: two-sided, ties dropped. "
            "Interval: 95 % bootstrap over images of the mean per-image difference. The settings were chosen on "
            "train; val is reported as it came.\n\n" + "\n".join(rows) + "\n\nPer-image segm AP:\n\n"
            + "\n".join(images))
    device = next(iter(predictors.values())).device.type
    write_section("Paired per-image differences of the inference settings" + (f" ({device})" if device != "cpu" else ""),
                  body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
