"""Where oracle-box masks go wrong: the shape of each predicted polygon against its cell, from the GT box.

For every val cell, given its GT box: mask IoU with the GT mask, predicted area / GT area, fill of the box
(predicted area / box area; the GT's own fill beside it), IoU between the polygon's bounding box and the GT box,
and precision (share of the predicted mask on the cell). Medians with quartiles, one row per weights file, with
the polygons as the model emits them (vertices clipped into the box, the default) and unclipped.

    python benchmarks/bench_oracle_shapes.py weights/cellboxify_livecell_boxes.pt runs/X/model.pt ...

It told us why box-only fine-tuning lowered oracle IoU: not shrinking but polygons leaving their boxes
(polygon-box IoU 0.80), which a larger unary weight fixes (config.LossConfig.unary_weight).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VAL = REPO.parent / "shared" / "data" / "livecell-mini" / "val"


def shape_stats(weights: Path, clip: bool) -> dict[str, np.ndarray]:
    from napari_cellboxify.checkpoint import load_model
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.geometry import polygon_to_mask
    from napari_cellboxify.predict import Predictor

    model, _ = load_model(weights)
    model.roi_heads.clip_to_box = clip
    predictor = Predictor(model, "auto")
    val = load_coco(VAL / "annotations.json", VAL / "images")
    gt = val.pycocotools()
    stats: dict[str, list[float]] = {k: [] for k in ("iou", "area", "fill", "gt_fill", "box_iou", "precision")}
    for image in val.images:
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[image.id])) if a.get("segmentation")]
        if not anns:
            continue
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        pred = predictor.segment_boxes(read_image(image.path), boxes)
        for ann, box, poly in zip(anns, boxes, pred.polygons_xy):
            truth = gt.annToMask(ann).astype(bool)
            mask = polygon_to_mask(poly, truth.shape)
            box_area = float((box[2] - box[0]) * (box[3] - box[1]))
            stats["iou"].append((mask & truth).sum() / max(1, (mask | truth).sum()))
            stats["area"].append(mask.sum() / max(1, truth.sum()))
            stats["fill"].append(mask.sum() / box_area)
            stats["gt_fill"].append(truth.sum() / box_area)
            pbox = np.r_[poly.min(0), poly.max(0)]
            inter = (max(0.0, min(pbox[2], box[2]) - max(pbox[0], box[0]))
                     * max(0.0, min(pbox[3], box[3]) - max(pbox[1], box[1])))
            union = (pbox[2] - pbox[0]) * (pbox[3] - pbox[1]) + box_area - inter
            stats["box_iou"].append(inter / max(union, 1e-6))
            stats["precision"].append((mask & truth).sum() / max(1, mask.sum()))
    return {k: np.asarray(v) for k, v in stats.items()}


def _q(values: np.ndarray) -> str:
    return f"{np.median(values):.2f} [{np.percentile(values, 25):.2f}, {np.percentile(values, 75):.2f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if not (VAL / "annotations.json").exists():
        print(f"skipped: LIVECell mini val not found at {VAL}")
        return 0
    lines = ["Given each val cell's GT box (892 cells): median [quartiles] over cells.", "",
             "| weights | vertices | mask IoU | area / GT area | fill of box (GT: {gt}) | polygon box IoU | precision |",
             "|---|---|---|---|---|---|---|"]
    gt_fill = None
    for weights in args.weights:
        for clip in (True, False):
            s = shape_stats(weights, clip)
            gt_fill = _q(s["gt_fill"])
            name = weights.resolve().relative_to(REPO) if weights.resolve().is_relative_to(REPO) else weights
            lines.append(f"| `{name}` | {'clipped to box' if clip else 'unclipped'} | {_q(s['iou'])} | "
                         f"{_q(s['area'])} | {_q(s['fill'])} | {_q(s['box_iou'])} | {_q(s['precision'])} |")
            print(lines[-1], flush=True)
    lines[2] = lines[2].replace("{gt}", gt_fill or "-")
    write_section("Oracle-box mask shapes (livecell-mini val)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
