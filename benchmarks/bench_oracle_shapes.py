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
from _results import REPO, shown, write_section  # noqa: E402

VAL = REPO.parent / "shared" / "data" / "livecell-mini" / "val"


def shape_stats(model, val, clip: bool) -> dict[str, np.ndarray]:
    """Per-cell shape figures of ``model``'s oracle-box polygons on ``val`` (a CocoFile)."""
    import torch
    from torchvision.ops import box_iou

    from napari_cellboxify.evaluate import oracle_cells
    from napari_cellboxify.geometry import mask_iou, polygon_to_mask
    from napari_cellboxify.predict import Predictor

    model.roi_heads.clip_to_box = clip
    predictor = Predictor(model, "auto")
    stats: dict[str, list[float]] = {k: [] for k in ("iou", "area", "fill", "gt_fill", "box_iou", "precision")}
    for box, poly, truth in oracle_cells(predictor, val):
        mask = polygon_to_mask(poly, truth.shape)
        box_area = float((box[2] - box[0]) * (box[3] - box[1]))
        poly_box = torch.from_numpy(np.r_[poly.min(0), poly.max(0)][None].astype(np.float32))
        stats["iou"].append(mask_iou(mask, truth))
        stats["area"].append(mask.sum() / truth.sum())
        stats["fill"].append(mask.sum() / box_area)
        stats["gt_fill"].append(truth.sum() / box_area)
        stats["box_iou"].append(float(box_iou(poly_box, torch.from_numpy(box[None]))[0, 0]))
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
    from napari_cellboxify.checkpoint import load_model
    from napari_cellboxify.data.coco import load_coco

    val = load_coco(VAL / "annotations.json", VAL / "images")
    gt_fill = None
    for weights in args.weights:
        model, _ = load_model(weights)
        for clip in (True, False):
            s = shape_stats(model, val, clip)
            gt_fill = _q(s["gt_fill"])
            lines.append(f"| `{shown(weights)}` | {'clipped to box' if clip else 'unclipped'} | {_q(s['iou'])} | "
                         f"{_q(s['area'])} | {_q(s['fill'])} | {_q(s['box_iou'])} | {_q(s['precision'])} |")
            print(lines[-1], flush=True)
    lines[2] = lines[2].replace("{gt}", gt_fill or "-")
    write_section("Oracle-box mask shapes (livecell-mini val)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
