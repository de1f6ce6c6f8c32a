"""Evaluation with LIVECell's COCO settings, per-cell-type AP, and the oracle-box mask IoU.

LIVECell adjusts COCO for dense, small objects: up to 2,000 detections per image and cell-sized area ranges
(small < 324 px^2, medium 324-961 px^2, large > 961 px^2). AP, AP50, AP75 and AP by size are reported at
maxDets = 2000. AP values here are percentages (0-100).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable

import numpy as np

from .data.coco import CocoFile
from .data.images import open_image, read_image
from .geometry import box_inscribed_ellipse, box_polygon, mask_iou, polygon_to_mask, polygon_window
from .predict import Prediction, Predictor

MAX_DETS = [100, 500, 2000]
AREA_RANGES = {"all": [0, 1e10], "small": [0, 324], "medium": [324, 961], "large": [961, 1e10]}
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def cell_type(file_name: str) -> str | None:
    """LIVECell names start with the cell line: ``A172_Phase_C7_1_...`` -> ``A172``."""
    stem = Path(file_name).name
    return stem.split("_Phase")[0] if "_Phase" in stem else None


def image_group(entry: dict) -> str | None:
    """The group an image is scored in besides the whole set: its COCO entry's ``cell_type`` (Sartorius), else
    its ``modality`` (DSB2018: fluorescence or brightfield), else the cell line in a LIVECell file name."""
    for key in ("cell_type", "modality"):
        if isinstance(entry.get(key), str) and entry[key]:
            return entry[key]
    return cell_type(str(entry.get("file_name", "")))


def coco_eval(gt, detections: list[dict], iou_type: str, image_ids: list[int] | None = None,
              sizes: bool = True) -> dict[str, float]:
    """Run COCOeval with LIVECell's parameters; returns AP, AP50, AP75, APs, APm, APl (0-100) at maxDets 2000.

    Every figure is read from COCOeval's precision table at the last ``maxDets`` (2,000), as LIVECell's own
    evaluation does. pycocotools' ``summarize()`` is not used: it computes its headline AP at 100 detections
    per image whenever 100 is among ``maxDets``, which caps recall on LIVECell's crowded images (until 2026-12-03
    every "AP" of this project was that figure; AP50/AP75 were already at 2,000). For ``segm`` the detections'
    boxes are dropped so that pycocotools takes each detection's area from its mask, as LIVECell's evaluation
    does (with a box it would use the box's area for the size ranges). ``sizes=False`` skips the three size
    ranges (APs, APm, APl come back 0): AP, AP50 and AP75 are the same and pycocotools' per-image matching, a
    Python loop, runs once instead of four times.
    """
    return coco_eval_by_group(gt, detections, iou_type, {}, image_ids, sizes)[0]


def coco_eval_by_group(gt, detections: list[dict], iou_type: str, groups: dict[str, list[int]],
                       image_ids: list[int] | None = None, sizes: bool = True) -> tuple[dict, dict[str, dict]]:
    """``coco_eval`` over all images and over each group of image ids, from one matching of detections to cells.

    COCOeval's matching (``evaluate()``: IoUs and per-image greedy matching) is most of its time; a group's
    figures only need its images' matches accumulated, so per-cell-type AP costs no second matching.
    """
    from pycocotools.cocoeval import COCOeval

    if not detections:
        zero = {name: 0.0 for name in STAT_NAMES}
        return zero, {name: dict(zero) for name in groups}
    if iou_type == "segm":
        detections = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
    areas = AREA_RANGES if sizes else {"all": AREA_RANGES["all"]}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.maxDets = MAX_DETS
        ev.params.areaRng = list(areas.values())
        ev.params.areaRngLbl = list(areas)
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        overall = _stats(ev, areas)
        per_group = {name: _stats(_restricted(ev, ids), areas) for name, ids in groups.items()}
    return overall, per_group


def _restricted(ev, image_ids: list[int]):
    """A copy of an evaluated COCOeval whose ``accumulate()`` covers only ``image_ids``.

    ``accumulate(p)`` with fewer images indexes ``evalImgs`` by the position in ``p.imgIds`` rather than in the
    evaluated list, so the per-image results are picked here: ``evalImgs`` runs over categories, then area
    ranges, then the evaluated (sorted) image ids.
    """
    import copy

    evaluated = list(ev._paramsEval.imgIds)
    position = {image_id: i for i, image_id in enumerate(evaluated)}
    ids = sorted(i for i in set(image_ids) if i in position)
    n_cats = len(ev._paramsEval.catIds) if ev._paramsEval.useCats else 1
    n_areas, n_images = len(ev._paramsEval.areaRng), len(evaluated)
    sub = copy.copy(ev)
    sub.params, sub._paramsEval = copy.deepcopy(ev.params), copy.deepcopy(ev._paramsEval)
    sub.params.imgIds = sub._paramsEval.imgIds = ids
    sub.evalImgs = [ev.evalImgs[(k * n_areas + a) * n_images + position[i]]
                    for k in range(n_cats) for a in range(n_areas) for i in ids]
    sub.accumulate()
    return sub


def _stats(ev, areas: dict) -> dict[str, float]:
    precision = ev.eval["precision"]  # (IoU thresholds, recall levels, categories, area ranges, maxDets)

    def average(iou: float | None = None, area: str = "all") -> float:
        if area not in areas:
            return 0.0
        table = precision[:, :, :, list(areas).index(area), len(MAX_DETS) - 1]
        if iou is not None:
            table = table[np.isclose(ev.params.iouThrs, iou)]
        valid = table[table > -1]  # -1: no ground truth in that range
        return float(valid.mean() * 100) if valid.size else 0.0

    return {"AP": average(), "AP50": average(0.5), "AP75": average(0.75),
            "APs": average(area="small"), "APm": average(area="medium"), "APl": average(area="large")}


def prediction_to_coco(pred: Prediction, image_id: int) -> list[dict]:
    """Detections in COCO result format, masks as RLE (pycocotools), one entry per instance."""
    from .export import window_rle

    out = []
    for poly, box, score in zip(pred.polygons_xy, pred.boxes_xyxy, pred.scores):
        y0, x0, mask = polygon_window(poly, pred.shape)  # memory per cell, not per image
        rle = window_rle(mask, y0, x0, pred.shape)
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append({"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score), "segmentation": rle})
    return out


def segm_unscorable(coco: CocoFile) -> str | None:
    """Why segm AP cannot be computed against ``coco`` (annotations without masks), or None when it can.

    A CellBoxify user's own annotations are boxes: they still measure detection (bbox AP), and mask AP needs
    every cell traced, because COCOeval would count a detection on an untraced cell as a false positive.
    """
    anns = coco.data["annotations"]
    missing = sum(1 for a in anns if not a.get("segmentation"))
    if not missing:
        return None
    if missing == len(anns):
        return "the annotations are boxes only (no 'segmentation'): masks cannot be scored, boxes are"
    return f"{missing} of {len(anns)} annotations have no 'segmentation': masks cannot be scored, boxes are"


def evaluate_detections(coco: CocoFile, detections: list[dict]) -> dict:
    """bbox and segm metrics overall and per cell type; segm only when every annotation has a mask, else
    ``metrics["segm_skipped"]`` says why."""
    gt = coco.pycocotools()
    for ann in gt.dataset["annotations"]:  # COCOeval needs an area per GT; LIVECell's is the polygon area
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    skipped = segm_unscorable(coco)
    kinds = ("bbox",) if skipped else ("bbox", "segm")
    types: dict[str, list[int]] = {}
    entries = {entry.get("id"): entry for entry in coco.data["images"]}
    for image in coco.images:
        kind = image_group(entries.get(image.id, {"file_name": image.file_name}))
        if kind:
            types.setdefault(kind, []).append(image.id)
    metrics: dict = {}
    per_type: dict[str, dict[str, float]] = {cell: {} for cell in sorted(types)}
    for kind in kinds:
        metrics[kind], by_type = coco_eval_by_group(gt, detections, kind, types)
        for cell, stats in by_type.items():
            per_type[cell][f"{kind}_AP"] = stats["AP"]
    if skipped:
        metrics["segm_skipped"] = skipped
    if types:
        metrics["per_cell_type"] = per_type
    return metrics


# COCOeval compares every annotated cell of an image with each of up to 2,000 detections (and, for masks, their
# RLEs): time and memory grow with their product. The densest LIVECell image holds about 3,000 cells.
MAX_CELLS_PER_IMAGE = 10_000


def check_scorable(coco: CocoFile) -> None:
    """Refuse, before any image is segmented, a file that COCOeval could not score in bounded memory and time."""
    worst = max(coco.images, key=lambda image: len(image.ann_ids), default=None)
    if worst is not None and len(worst.ann_ids) > MAX_CELLS_PER_IMAGE:
        raise ValueError(f"{worst.file_name} has {len(worst.ann_ids):,} annotated cells; evaluate scores at most "
                         f"{MAX_CELLS_PER_IMAGE:,} per image (each is compared with up to {MAX_DETS[-1]:,} "
                         "detections): split the image and its annotations into parts")


def evaluate(predictor: Predictor, coco: CocoFile, progress: Callable[[int, int], None] | None = None,
             score_threshold: float = 0.05) -> dict:
    """Segment every image of ``coco`` and score the result against its annotations."""
    if not coco.data["annotations"]:  # COCOeval would report AP 0 (its -1, "undefined", clipped): say it instead
        raise ValueError(f"{coco.path} has no annotated cells to evaluate against")
    check_scorable(coco)
    detections = []
    for i, image in enumerate(coco.images):
        pred = predictor.segment(open_image(image.path), score_threshold=score_threshold)
        detections += prediction_to_coco(pred, image.id)
        if progress:
            progress(i + 1, len(coco.images))
    metrics = evaluate_detections(coco, detections)
    metrics["num_images"] = len(coco.images)
    metrics["num_detections"] = len(detections)
    return metrics


def oracle_cells(predictor: Predictor, coco: CocoFile, progress: Callable[[int, int], None] | None = None):
    """Yield ``(box_xyxy, polygon_xy, truth_mask)`` for every GT cell with a mask, its polygon predicted from its
    GT box (the oracle-box setting); images are read and segmented one at a time."""
    gt = coco.pycocotools()
    for i, image in enumerate(coco.images):
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[image.id])) if a.get("segmentation")]
        if not anns:  # nothing to score here, but a progress bar still counts the image
            if progress:
                progress(i + 1, len(coco.images))
            continue
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float32)
        pred = predictor.segment_boxes(read_image(image.path), boxes)
        shape = pred.shape
        for ann, box, poly in zip(anns, boxes, pred.polygons_xy):
            truth = gt.annToMask(ann).astype(bool)
            if truth.shape != shape:
                raise ValueError(f"{image.file_name}: annotation masks are {truth.shape}, the image is {shape}")
            yield box, poly, truth
        if progress:
            progress(i + 1, len(coco.images))


def oracle_box_iou(predictor: Predictor, coco: CocoFile, progress: Callable[[int, int], None] | None = None) -> dict:
    """Mean mask IoU when the GT boxes are given, beside the filled-box and inscribed-ellipse baselines."""
    ious = {"model": [], "filled_box": [], "ellipse": []}
    for box, poly, truth in oracle_cells(predictor, coco, progress):
        shape = truth.shape
        ious["model"].append(mask_iou(polygon_to_mask(poly, shape), truth))
        ious["filled_box"].append(mask_iou(polygon_to_mask(box_polygon(box), shape), truth))
        ious["ellipse"].append(mask_iou(polygon_to_mask(box_inscribed_ellipse(box), shape), truth))
    if not ious["model"]:
        raise ValueError(f"{coco.path}: no annotation has a mask ('segmentation'); oracle-box IoU compares the "
                         "outline of each box with its cell's mask")
    return {f"mean_iou_{k}": float(np.mean(v)) for k, v in ious.items()} | {"num_cells": len(ious["model"])}

