"""The check boxes: a strip of the user's boxes set aside, and how a fine-tune is measured on it.

A strip at the far end of each boxed area (along its longer side) holding about a fifth of that image's boxes is
set aside (``split_check_boxes``); the network trains only on the rest of the area (``AreaSource``). Detection on
the strip (COCO bbox AP against the set-aside boxes, detections counted by their centre: ``check_ap``) is the
yardstick of every choice a fine-tune makes; a change must beat the start by ``min_gain`` there and hold across
the boxes (``steady_share``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .data.annotated_area import annotated_area
from .data.dataset import Sample
from .data.transforms import to_model_input

CHECK_SHARE = 0.2  # share of each image's boxes set aside as check boxes
MIN_CHECK = 3  # fewer check boxes than this measure nothing: AP on 1-2 boxes is 0, 50 or 100
# What a change (new weights or zoom) must gain on the check boxes, in bbox AP, to replace the start weights. On
# a LIVECell type the weights know (A172, 6 check boxes), fine-tuning scored +1.4 on the check boxes while losing
# 3.3 segm AP on the next image; the fitted zoom +0.4 while losing 2.5. On new kinds of cells the check boxes
# gained +13 to +41 (docs/experiments/2026-12-05-fine-tune-recipe.md).
MIN_GAIN = 3.0
# On few check boxes one box moves AP by 100/n, so a change must gain more there: ``GAIN_PER_ROOT_BOX / sqrt(n)``
# AP when that is above MIN_GAIN (17 on 3 boxes, 12 on 6, 7 on 20, MIN_GAIN from 100). On 10 boxed nuclei (3 check
# boxes) a fine-tune from `nuclei` scored 90 -> 97 there and 45 -> 21 segm AP on other images.
GAIN_PER_ROOT_BOX = 30.0
# ... and a change must also score higher on this share of random halves of the check boxes (the other half
# ignored). On A172 (6 check boxes) one fine-tune gained +4.2 on the check boxes and lost 6.6 segm AP on the next
# image: a gain that two of six boxes carry (RESULTS.md "Fine-tuning on a few boxes").
STEADY_SHARE = 0.8
HALF_DRAWS = 40
MIN_BOXES_TO_CHECK = 8  # below this many boxes in all, none are set aside (the report says it is unchecked)


@dataclass
class ImageSplit:
    """One boxed image divided into where the fine-tune trains and where it checks (rectangles ``(y0, y1, x0,
    x1)`` in image pixels; boxes XYXY in image pixels)."""

    name: str
    train_area: tuple[int, int, int, int]
    train_boxes: np.ndarray
    check_area: tuple[int, int, int, int] | None
    check_boxes: np.ndarray


def split_check_boxes(items: list[tuple[str, tuple[int, int], np.ndarray]], share: float = CHECK_SHARE,
                      min_check: int = MIN_CHECK, min_boxes: int = MIN_BOXES_TO_CHECK) -> list[ImageSplit]:
    """Set about ``share`` of each image's boxes aside as check boxes: the strip at the far end of its boxed
    area (``annotated_area``) along the area's longer side, cut between two boxes' centres.

    Args:
        items: ``[(name, (H, W), boxes_xyxy), ...]``.
    A box belongs to the side its centre lies on; the training area stops at the cut. With fewer than
    ``min_boxes`` boxes in all, nothing is set aside; otherwise at least ``min_check`` boxes are (taken from
    the images with most boxes).
    """
    boxes_of = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for _, _, b in items]
    total = sum(len(b) for b in boxes_of)
    counts = [0] * len(items)
    if total >= min_boxes:
        counts = [int(round(share * len(b))) if len(b) >= 4 else 0 for b in boxes_of]
        order = sorted(range(len(items)), key=lambda i: -len(boxes_of[i]))
        while sum(counts) < min_check:  # top up from the images with most boxes, keeping 2 to train on each
            grown = False
            for i in order:
                if sum(counts) < min_check and len(boxes_of[i]) - counts[i] > 2:
                    counts[i] += 1
                    grown = True
            if not grown:
                break
    splits = []
    for (name, shape, _), boxes, k in zip(items, boxes_of, counts):
        area = annotated_area(boxes, shape)
        if k == 0:
            splits.append(ImageSplit(name, area, boxes, None, np.zeros((0, 4), np.float32)))
            continue
        y0, y1, x0, x1 = area
        axis = 0 if (x1 - x0) >= (y1 - y0) else 1  # 0: cut along x
        centres = (boxes[:, axis] + boxes[:, axis + 2]) / 2
        order = np.argsort(centres, kind="stable")
        cut = float(centres[order[-k - 1]] + centres[order[-k]]) / 2
        check = centres >= cut
        # Areas are whole pixels: they share at most the one pixel column (row) the cut falls in.
        lo, hi = int(np.floor(cut)), int(np.ceil(cut))
        if axis == 0:
            train_area, check_area = (y0, y1, x0, max(hi, x0 + 1)), (y0, y1, min(lo, x1 - 1), x1)
        else:
            train_area, check_area = (y0, max(hi, y0 + 1), x0, x1), (min(lo, y1 - 1), y1, x0, x1)
        splits.append(ImageSplit(name, train_area, boxes[~check], check_area, boxes[check]))
    return splits


class AreaSource:
    """Training samples cut to each image's training area (data.dataset.Source): normalised images, boxes
    clipped to the area. Nothing outside it is seen, so neither the check strip nor unboxed cells beyond the
    boxed area are taught as background."""

    def __init__(self, normalised: list[np.ndarray], splits: list[ImageSplit]):
        self.samples = []
        for image, split in zip(normalised, splits):
            if not len(split.train_boxes):
                continue
            y0, y1, x0, x1 = split.train_area
            boxes = split.train_boxes - np.array([x0, y0, x0, y0], np.float32)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0)
            self.samples.append(Sample(np.ascontiguousarray(image[y0:y1, x0:x1]), boxes, None, split.name))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        return self.samples[index]


@dataclass
class Check:
    """Detections on the check boxes, one entry per checked image (``truth`` boxes XYXY, ``found`` (boxes,
    scores)), and their COCO bbox AP (0-100)."""

    truth: list[np.ndarray]
    found: list[tuple[np.ndarray, np.ndarray]]
    ap: float


def min_gain(n_check: int) -> float:
    """The check-AP gain a change needs over the start on ``n_check`` check boxes (see GAIN_PER_ROOT_BOX)."""
    return max(MIN_GAIN, GAIN_PER_ROOT_BOX / math.sqrt(max(n_check, 1)))


def steady_share(start: Check, new: Check, draws: int = HALF_DRAWS, seed: int = 0) -> float:
    """The share of random halves of the check boxes (the rest ignored) on which ``new`` scores a higher bbox AP
    than ``start``: near 1 when a gain holds across the boxes, near 0.5 or below when a few boxes carry it."""
    from .zoom_fit import box_ap

    sizes = [len(t) for t in start.truth]
    total = sum(sizes)
    if total < 2:
        return 1.0 if new.ap > start.ap else 0.0
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(draws):
        chosen = np.zeros(total, bool)
        chosen[rng.choice(total, (total + 1) // 2, replace=False)] = True
        counted = np.split(chosen, np.cumsum(sizes)[:-1])
        wins += box_ap(new.truth, new.found, counted) > box_ap(start.truth, start.found, counted)
    return wins / draws


@torch.no_grad()
def check_ap(model, normalised: list[np.ndarray], splits: list[ImageSplit], zoom: float) -> Check | None:
    """Detections of ``model`` at ``zoom`` on the check boxes and their COCO bbox AP, or None when there are none.

    Each check strip is detected with a margin of context (a median box side) and only detections whose centre
    lies in the strip count, as only the strip's cells were set aside.
    """
    from .zoom_fit import box_ap

    truth, found = [], []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for image, split in zip(normalised, splits):
            if split.check_area is None or not len(split.check_boxes):
                continue
            y0, y1, x0, x1 = split.check_area
            sides = np.concatenate([split.check_boxes[:, 2] - split.check_boxes[:, 0],
                                    split.check_boxes[:, 3] - split.check_boxes[:, 1]])
            pad = int(np.ceil(np.median(sides)))
            h, w = image.shape
            cy0, cy1, cx0, cx1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
            tensor = to_model_input(image[cy0:cy1, cx0:cx1]).to(device)
            boxes, scores = model.detect(model.encode(tensor, zoom))
            boxes = boxes.float().cpu().numpy() + np.array([cx0, cy0, cx0, cy0], np.float32)
            scores = scores.float().cpu().numpy()
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            keep = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
            truth.append(split.check_boxes)
            found.append((boxes[keep], scores[keep]))
    finally:
        model.train(was_training)
    return Check(truth, found, box_ap(truth, found)) if truth else None
