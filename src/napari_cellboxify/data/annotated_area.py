"""The part of an image its boxes annotate: where box-supervised training may take background from.

A box-supervised detector learns "background" from every pixel no box covers, so a cell nobody boxed is taught
as background. Biologists box a few dozen cells, usually in one part of a large image, so training samples only
the rectangle that holds the boxes, grown by a margin of half the median box side (context for the cells at
its edge without reaching far into unboxed neighbours). A fully annotated image is left as it is. The README
asks users to box every cell inside that rectangle.
"""

from __future__ import annotations

import numpy as np

MARGIN_OF_MEDIAN_SIDE = 0.5


def annotated_area(boxes_xyxy: np.ndarray, shape: tuple[int, int],
                   margin: float = MARGIN_OF_MEDIAN_SIDE) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the rectangle holding all boxes plus ``margin`` x the median box side, in the image.

    With no boxes the whole image is returned (nothing to restrict to).
    """
    h, w = shape
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return 0, h, 0, w
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    pad = margin * float(np.median(sides))
    x0 = int(np.clip(np.floor(boxes[:, 0].min() - pad), 0, w - 1))
    y0 = int(np.clip(np.floor(boxes[:, 1].min() - pad), 0, h - 1))
    x1 = int(np.clip(np.ceil(boxes[:, 2].max() + pad), x0 + 1, w))
    y1 = int(np.clip(np.ceil(boxes[:, 3].max() + pad), y0 + 1, h))
    return y0, y1, x0, x1


def crop_to_area(image: np.ndarray, boxes_xyxy: np.ndarray, masks: np.ndarray | None,
                 area: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image (and masks) cut to ``area`` and the boxes moved into its frame (they lie inside it)."""
    y0, y1, x0, x1 = area
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) - np.array([x0, y0, x0, y0], np.float32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0)
    cut_masks = masks[:, y0:y1, x0:x1] if masks is not None else None
    return image[y0:y1, x0:x1], boxes, cut_masks


def area_fraction(items: list[tuple[np.ndarray, tuple[int, int]]]) -> float:
    """Share of the pixels of ``[(boxes_xyxy, (H, W)), ...]`` that lie in their images' annotated areas."""
    inside = total = 0
    for boxes, shape in items:
        y0, y1, x0, x1 = annotated_area(boxes, shape)
        inside += (y1 - y0) * (x1 - x0)
        total += shape[0] * shape[1]
    return inside / total if total else 1.0
