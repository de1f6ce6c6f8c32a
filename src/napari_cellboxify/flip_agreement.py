"""How well weights agree with themselves on an image and on its mirror image: a label-free sign of whether they
suit the image.

Weights that know a kind of cell find the same cells whichever way the image is turned; on cells they do not know
they find background patches and fragments, and different ones each way. Measured on 19 validation images of
three domains (LIVECell, Sartorius neuronal cultures, DSB2018 fluorescence nuclei) with the three shipped files,
the file that agreed most with itself was the one whose detections matched the true cells best on every image
(docs/experiments/2026-12-07-label-free-start-choice.md). A few dozen boxes in one corner cannot rank close files;
this looks at the whole image. The same sign chooses the shipped file for images without any boxes
(``choose_shipped``: ``--weights auto`` of ``predict`` and ``evaluate``, the panel's *Choose for this image*).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from .data.annotated_area import annotated_area
from .data.images import TiffRegions, image_planes, open_image
from .tta import boxes_from_view

LEFT_RIGHT = 1  # tta's view that flips left-right

AGREEMENT_WINDOW = 1024  # the image region (px a side, around the boxes) measured: bounds the cost on large images
MATCH_IOU = 0.5
CHOICE_IMAGES = 3  # images (spread through the input) that choose a shipped file for all of them
# Two files this close in agreement are a close call: on images the rule was not chosen on, the two wrong choices
# (`cells` for `neurons` on SH-SY5Y) came by 0.01-0.03 (docs/experiments/2026-12-08-automatic-weights-choice.md)
CLOSE_CALL = 0.05


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
    return matched_f1(*mirror_pair(predictor, np.ascontiguousarray(image[y0:y1, x0:x1])))


def mirror_pair(predictor, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``predictor``'s boxes (XYXY) on ``region`` and on its left-right mirror image, the latter mapped back."""
    found = predictor.segment_image(region).boxes_xyxy
    mirrored = predictor.segment_image(np.ascontiguousarray(region[:, ::-1])).boxes_xyxy
    return found, boxes_from_view(torch.as_tensor(mirrored), LEFT_RIGHT, region.shape[:2]).numpy()


def most_agreeing(agreement: dict[str, float]) -> str:
    """The name with the highest agreement; a tie goes to the default file, else to the first listed."""
    from .weights import DEFAULT

    return max(agreement, key=lambda name: (agreement[name], name == DEFAULT))


def choose_shipped(images, device="auto", progress=None) -> tuple[str, dict[str, float]]:
    """The shipped file that agrees most with itself on ``images`` (2-D or RGB planes, or ``TiffRegions``; each
    measured on its central ``AGREEMENT_WINDOW`` square), and every file's mean agreement; ties go to the default.

    Each file runs at its own zoom, at score 0.5 and without test-time augmentation, as the choice was measured
    (docs/experiments/2026-12-07-label-free-start-choice.md). ``progress(done, total)`` counts file × image.
    """
    from .predict import Predictor
    from .weights import SHIPPED

    images = list(images)
    if not images:
        raise ValueError("no image to choose the weights on")
    agreement, total = {}, len(SHIPPED) * len(images)
    for n, name in enumerate(SHIPPED):
        predictor = Predictor.from_weights(name, device=device).with_settings(score_threshold=0.5, tta="off")
        scores = []
        for image in images:
            scores.append(flip_agreement(predictor, image, np.zeros((0, 4), np.float32)))
            if progress is not None:
                progress(n * len(images) + len(scores), total)
        agreement[name] = round(float(np.mean(scores)), 3)
    return most_agreeing(agreement), agreement


def close_call(agreement: dict[str, float], chosen: str) -> str | None:
    """The runner-up's name when it agreed within ``CLOSE_CALL`` of the ``chosen`` file, else None."""
    others = [name for name in agreement if name != chosen]
    if not others:
        return None
    runner_up = max(others, key=agreement.get)
    return runner_up if agreement[chosen] - agreement[runner_up] < CLOSE_CALL else None


def spread(count: int, k: int = CHOICE_IMAGES) -> list[int]:
    """Indices of up to ``k`` of ``count`` items spread evenly, the first and the last included."""
    n = min(k, count)
    return sorted({round(i * (count - 1) / max(n - 1, 1)) for i in range(n)})


def planes_to_choose_on(paths) -> list:
    """One plane from each of up to ``CHOICE_IMAGES`` files spread through ``paths``: a stack's middle plane, a
    large TIFF as regions (only the window measured is read)."""
    paths = list(paths)
    planes = []
    for index in spread(len(paths)):
        image = open_image(paths[index])
        if isinstance(image, TiffRegions):
            planes.append(image)
        else:
            stack = image_planes(image)
            planes.append(np.array(stack[len(stack) // 2][1]))  # a copy: the rest of the stack is freed
    return planes
