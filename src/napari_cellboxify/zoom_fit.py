"""Choose the zoom from the user's boxes: the zoom at which the detector's boxes match theirs best.

The zoom (``model.image_scale``) must fit the cells' size in pixels, and cells of one type vary: on LIVECell val
the default weights (trained at 1.5) gave pooled segm AP 20.54 at their own zoom, while each image segmented at
the zoom that matched its boxes best gave 22.52 (large flat A172 and SKOV3 cells wanted 0.75, SkBr3 1.75; train,
which the weights were tuned on: 15.91 -> 16.15). Boxes are what a CellBoxify user draws anyway, so they can
choose the zoom before any fine-tuning: detection only (no outlines) at six zooms around the current one, scored
by COCO bbox AP against the boxes; about 6 s for a fully boxed 704x520 image on 2 CPU cores, 2 s on a GPU
(benchmarks/bench_zoom.py, RESULTS.md "Zoom sensitivity").

Only the rectangle around the boxes is searched (data/annotated_area.py, the rule fine-tuning follows): a user
who boxed one corner of an image has said nothing about cells elsewhere, but should box every cell inside that
rectangle. Cutting the image to it also keeps the search fast on large images; a rectangle larger than
``window`` px is searched tile by tile (detections kept in the tile that holds their centre), so that boxes spread
over a whole large image do not make the network see it at once at up to 2x zoom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torchvision.ops import nms

from .data.annotated_area import annotated_area
from .predict import LARGE_SIDE, MARGIN

# Zooms tried, as factors of the current one: 0.75-2.0 for weights at 1.5, the range measured in bench_zoom.py.
# Farther zooms are one more click away (set the Zoom near them and fit again).
ZOOM_FACTORS = (0.5, 2 / 3, 5 / 6, 1.0, 7 / 6, 4 / 3)


@dataclass
class ZoomFit:
    """The chosen ``zoom`` and the bbox AP (0-100) against the user's boxes at every zoom tried."""

    zoom: float
    box_ap: dict[float, float] = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{z:.2f}: {ap:.1f}" for z, ap in sorted(self.box_ap.items()))


def box_ap(truth: list[np.ndarray], found: list[tuple[np.ndarray, np.ndarray]],
           counted: list[np.ndarray] | None = None) -> float:
    """COCO bbox AP (0-100, LIVECell's settings) of ``found`` [(boxes XYXY, scores), ...] against ``truth``
    [boxes XYXY, ...], one entry per image.

    ``counted`` (one boolean array per image, over its truth boxes) scores a subset of the boxes: the others are
    marked crowd, so a detection on them counts neither as a hit nor as a false positive.
    """
    from .data.coco import coco_index
    from .evaluate import coco_eval
    from .export import boxes_coco

    # Image ids 1..N in order, as boxes_coco numbers them; image sizes play no part in bbox AP.
    data = boxes_coco([(str(i), (0, 0), boxes) for i, boxes in enumerate(truth, start=1)])
    if counted is not None:
        flags = np.concatenate([np.asarray(c, bool).reshape(-1) for c in counted])
        for ann, keep in zip(data["annotations"], flags):
            ann["iscrowd"] = int(not keep)
    gt = coco_index(data)
    detections = [{"image_id": i, "category_id": 1, "score": float(s), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                  for i, (boxes, scores) in enumerate(found, start=1)
                  for b, s in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), scores)]
    return coco_eval(gt, detections, "bbox", sizes=False)["AP"]


def _regions(tensor: torch.Tensor, window: int, margin: int = MARGIN) -> list[tuple[torch.Tensor, tuple, tuple]]:
    """``[(crop, (x0, y0), core), ...]``: the whole (C, H, W) tensor when it fits in ``window``, else tiles of
    ``window / 2`` (the core: x0, y0, x1, y1 in the tensor) each cut out with ``margin`` px of context."""
    h, w = tensor.shape[-2:]
    if max(h, w) <= window:
        return [(tensor, (0, 0), (0, 0, w, h))]
    tile = max(window // 2, 1)
    out = []
    for cy in range(0, h, tile):
        for cx in range(0, w, tile):
            x0, y0 = max(0, cx - margin), max(0, cy - margin)
            x1, y1 = min(w, cx + tile + margin), min(h, cy + tile + margin)
            out.append((tensor[:, y0:y1, x0:x1], (x0, y0), (cx, cy, min(w, cx + tile), min(h, cy + tile))))
    return out


def _detect(model, regions, nms_thresh: float, step: Callable[[], None], scale: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores over all ``regions`` of one image seen at zoom ``scale``, each detection from the region
    whose core holds its centre, duplicates across cores removed by NMS (as ``Predictor.segment_tiled`` merges
    tiles); ``step()`` is called after each region."""
    if len(regions) == 1:  # the whole rectangle at once
        found, score = model.detect(model.encode(regions[0][0], scale))
        step()
        return found.float().cpu().numpy(), score.float().cpu().numpy()
    boxes, scores = [], []
    for crop, (x0, y0), (cx0, cy0, cx1, cy1) in regions:
        found, score = model.detect(model.encode(crop, scale))
        step()
        found = found.float().cpu() + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        centre_x, centre_y = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
        keep = (centre_x >= cx0) & (centre_x < cx1) & (centre_y >= cy0) & (centre_y < cy1)
        boxes.append(found[keep])
        scores.append(score.float().cpu()[keep])
    found, score = torch.cat(boxes), torch.cat(scores)
    keep = nms(found, score, nms_thresh)
    return found[keep].numpy(), score[keep].numpy()


@torch.no_grad()
def fit_zoom(predictor, items: list[tuple[np.ndarray, np.ndarray]], factors=ZOOM_FACTORS,
             progress: Callable[[int, int], None] | None = None, window: int = LARGE_SIDE,
             tolerance: float = 0.05) -> ZoomFit:
    """The zoom, among ``factors`` x the predictor's current one, whose detections best match the boxes.

    Args:
        predictor: a ``Predictor``; its zoom is the search's centre and is left as it was (set
            ``predictor.image_scale`` to the answer).
        items: ``[(image, boxes_xyxy), ...]``, the images the user boxed and their boxes (image pixels); images
            without boxes are skipped.
        progress: called with (done, total) after each image (or tile of a large one) at each zoom.
        window: boxed rectangles larger than this (px) are searched in tiles of half of it.
        tolerance: zooms within this many AP of the best tie.

    Ties go to the zoom nearest the current one: without evidence, keep what the weights know. Fine-tuning passes
    its noise margin on the training boxes (``check_boxes.min_gain``): a few dozen boxes rank zooms by chance.
    """
    inputs, truth = [], []
    for image, boxes in items:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            continue
        # Normalised as a whole (contrast as in prediction; a stack is refused here, with the reason), then cut
        # to the boxes' rectangle.
        tensor = predictor.prepare(image)
        shape = tuple(tensor.shape[-2:])
        if min(shape) >= 8:  # smaller cannot hold a cell at any zoom
            y0, y1, x0, x1 = annotated_area(boxes, shape)
            inputs.append(_regions(tensor[:, y0:y1, x0:x1], window))
            truth.append(boxes - np.array([x0, y0, x0, y0], np.float32))
    if not inputs:
        raise ValueError("draw boxes around a few cells first: the zoom is chosen to match them")
    model, base = predictor.model, predictor.image_scale
    # Counted in regions, so that one large image tiled for the search still shows progress.
    total, done = len(factors) * sum(len(regions) for regions in inputs), [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    fit = ZoomFit(zoom=base)
    for factor in factors:
        found = [_detect(model, regions, predictor.config.model.box_nms_thresh, step, base * factor)
                 for regions in inputs]
        fit.box_ap[round(base * factor, 4)] = box_ap(truth, found)
    fit.zoom = nearest_tied_zoom(fit.box_ap, base, tolerance)
    return fit


def nearest_tied_zoom(box_ap: dict[float, float], base: float, tolerance: float) -> float:
    """Among the zooms of ``box_ap`` (zoom -> AP) within ``tolerance`` AP of the best, the one nearest ``base``."""
    best = max(box_ap.values())
    return min((z for z, ap in box_ap.items() if ap >= best - tolerance), key=lambda z: abs(np.log(z / base)))
