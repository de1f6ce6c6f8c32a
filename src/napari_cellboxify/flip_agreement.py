"""How well weights agree with themselves on an image and on its mirror image: a label-free sign of whether they
suit the image.

Weights that know a kind of cell find the same cells whichever way the image is turned; on cells they do not know
they find background patches and fragments, and different ones each way. Measured on 19 validation images of
three domains (LIVECell, Sartorius neuronal cultures, DSB2018 fluorescence nuclei) with the three shipped files,
the file that agreed most with itself was the one whose detections matched the true cells best on every image
(docs/experiments/2026-12-07-label-free-start-choice.md). A few dozen boxes in one corner cannot rank close files;
this looks at the whole image.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from .data.annotated_area import annotated_area
from .tta import boxes_from_view

LEFT_RIGHT = 1  # tta's view that flips left-right

AGREEMENT_WINDOW = 1024  # the image region (px a side, around the boxes) measured: bounds the cost on large images
MATCH_IOU = 0.5


def matched_f1(a: np.ndarray, b: np.ndarray, iou: float = MATCH_IOU) -> float:
    """F1 of a one-to-one matching of boxes ``a`` and ``b`` (XYXY) at box IoU >= ``iou``, greedy by IoU; 0 when
    either set is empty (no detections are no evidence of agreement)."""
    if not len(a) or not len(b):
        return 0.0
    overlaps = box_iou(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)).numpy()
    matched, used_a, used_b = 0, set(), set()
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        i, j = divmod(int(flat), overlaps.shape[1])
        if overlaps[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            matched += 1
    return 2.0 * matched / (len(a) + len(b))


def agreement_window(shape: tuple[int, int], boxes: np.ndarray, side: int = AGREEMENT_WINDOW) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the whole image when it fits in ``side``, else a ``side``-square region centred on the
    boxed area (clipped to the image)."""
    h, w = shape
    y0, y1, x0, x1 = annotated_area(np.asarray(boxes, np.float32).reshape(-1, 4), (h, w))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top = int(np.clip(cy - side // 2, 0, max(h - side, 0)))
    left = int(np.clip(cx - side // 2, 0, max(w - side, 0)))
    return top, min(top + side, h), left, min(left + side, w)


def flip_agreement(predictor, image: np.ndarray, boxes: np.ndarray, side: int = AGREEMENT_WINDOW) -> float:
    """Matched F1 between ``predictor``'s detections on ``image`` (2-D or RGB; the region ``agreement_window``
    picks) and those on its left-right mirror image, mapped back."""
    y0, y1, x0, x1 = agreement_window(image.shape[:2], boxes, side)
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    found = predictor.segment_image(region).boxes_xyxy
    mirrored = predictor.segment_image(np.ascontiguousarray(region[:, ::-1])).boxes_xyxy
    back = boxes_from_view(torch.as_tensor(mirrored), LEFT_RIGHT, region.shape[:2]).numpy()
    return matched_f1(found, back)
