"""The check boxes: which boxes are set aside, and how a change is judged on them."""

import numpy as np
import pytest

from napari_cellboxify.check_boxes import STEADY_SHARE, Check, split_check_boxes, steady_share
from napari_cellboxify.zoom_fit import box_ap


def _grid_boxes(n: int, side: float = 10.0, step: float = 20.0) -> np.ndarray:
    """Boxes on a jittered grid (cells are never exactly aligned: no two centres tie)."""
    cols = int(np.ceil(np.sqrt(n)))
    jitter = np.random.default_rng(n).uniform(0, 3, (n, 2))
    xy = np.array([[step * (i % cols), step * (i // cols)] for i in range(n)]) + jitter + 5
    return np.concatenate([xy, xy + side], axis=1).astype(np.float32)


def test_check_boxes_are_a_far_strip_of_about_a_fifth_never_trained_on():
    boxes = _grid_boxes(30)
    (split,) = split_check_boxes([("a", (200, 200), boxes)])
    assert len(split.check_boxes) == 6 and len(split.check_boxes) + len(split.train_boxes) == 30
    ty0, ty1, tx0, tx1 = split.train_area
    cy0, cy1, cx0, cx1 = split.check_area
    # the two areas share at most the pixel the cut falls in, and every box lies on its side by its centre
    assert tx1 <= cx0 + 1 or ty1 <= cy0 + 1
    centre = lambda b: ((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)  # noqa: E731
    x, y = centre(split.check_boxes)
    assert ((x >= cx0) & (x < cx1) & (y >= cy0) & (y < cy1)).all()
    x, y = centre(split.train_boxes)
    assert ((x >= tx0) & (x < tx1) & (y >= ty0) & (y < ty1)).all()


def test_few_boxes_keep_at_least_three_aside_and_very_few_none():
    (ten,) = split_check_boxes([("a", (200, 200), _grid_boxes(10))])
    assert len(ten.check_boxes) == 3 and len(ten.check_boxes) + len(ten.train_boxes) == 10
    (five,) = split_check_boxes([("a", (200, 200), _grid_boxes(5))])
    assert five.check_area is None and len(five.train_boxes) == 5
    # several images: a fifth of each, topped up to three from the most boxed
    splits = split_check_boxes([("a", (200, 200), _grid_boxes(6)), ("b", (200, 200), _grid_boxes(4))])
    assert sum(len(s.check_boxes) for s in splits) == 3 and all(len(s.train_boxes) >= 2 for s in splits)


def _found(truth: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detections that find exactly the ``hit`` boxes of ``truth`` (score 1) plus one far false positive."""
    boxes = np.concatenate([truth[hit], [[500, 500, 510, 510]]]).astype(np.float32)
    return boxes, np.concatenate([np.ones(int(hit.sum())), [0.5]])


def test_box_ap_scores_a_subset_and_ignores_detections_on_the_rest():
    truth = _grid_boxes(6)
    hit = np.array([True, True, True, False, False, False])
    assert box_ap([truth], [_found(truth, hit)]) == pytest.approx(50.0, abs=1.0)
    # only the three found boxes counted: the detections on them score, nothing on the others is a false positive
    assert box_ap([truth], [_found(truth, hit)], counted=[hit]) == pytest.approx(100.0, abs=1.0)
    assert box_ap([truth], [_found(truth, hit)], counted=[~hit]) == 0.0


def test_steady_share_tells_a_gain_across_the_boxes_from_one_carried_by_a_few():
    truth = _grid_boxes(10)
    start = np.zeros(10, bool)
    start[:3] = True
    broad = start.copy()
    broad[3:9] = True  # finds six more boxes
    narrow = np.zeros(10, bool)
    narrow[:4] = True  # one more box than the start
    checks = {name: Check([truth], [_found(truth, hit)], box_ap([truth], [_found(truth, hit)]))
              for name, hit in (("start", start), ("broad", broad), ("narrow", narrow))}
    assert steady_share(checks["start"], checks["broad"]) == 1.0
    assert steady_share(checks["start"], checks["narrow"]) < STEADY_SHARE  # a half without that box ties
    assert steady_share(checks["broad"], checks["start"]) == 0.0
