"""flip_agreement: the matching, the region measured, and agreement of weights with themselves under a mirror."""

import numpy as np
import pytest

from napari_cellboxify.flip_agreement import agreement_window, flip_agreement, matched_f1
from napari_cellboxify.predict import Prediction


def test_matched_f1_counts_one_to_one_matches_at_the_iou():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert matched_f1(a, a) == 1.0
    assert matched_f1(a, a + 100) == 0.0
    assert matched_f1(a, a[:1]) == pytest.approx(2 / 3)
    assert matched_f1(a, np.concatenate([a[:1], a[:1]])) == pytest.approx(0.5)  # one box matches once
    wider = a + np.array([0, 0, 4, 0], np.float32)  # IoU 100/140 = 0.71
    assert matched_f1(a, wider) == 1.0 and matched_f1(a, wider, iou=0.75) == 0.0
    assert matched_f1(a[:0], a[:0]) == 0.0  # nothing found is no evidence of agreement


def test_the_region_measured_is_the_whole_image_or_a_square_around_the_boxes():
    boxes = np.array([[3000, 4000, 3020, 4030]], np.float32)
    assert agreement_window((500, 700), boxes / 10) == (0, 500, 0, 700)
    y0, y1, x0, x1 = agreement_window((6000, 5000), boxes, side=1024)
    assert (y1 - y0, x1 - x0) == (1024, 1024) and y0 <= 4000 < 4030 <= y1 and x0 <= 3000 < 3020 <= x1
    assert agreement_window((6000, 5000), np.array([[4990, 5990, 5000, 6000]], np.float32), side=1024) == (
        4976, 6000, 3976, 5000)


class _Finder:
    """Finds the bright squares of an image (a stand-in for weights that know the cells); ``fixed`` adds
    detections at fixed image positions, whichever way the image is turned (weights finding patterns of their
    own)."""

    def __init__(self, fixed=()):
        self.fixed = np.asarray(fixed, np.float32).reshape(-1, 4)

    def segment_image(self, image):
        from skimage.measure import label, regionprops

        boxes = [[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regionprops(label(image > 0.5))]
        boxes = np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), self.fixed])
        return Prediction(np.zeros((len(boxes), 4, 2), np.float32), boxes, np.ones(len(boxes), np.float32),
                          image.shape[:2])


def test_weights_that_find_the_cells_agree_with_their_mirror_image_more_than_ones_that_find_patterns():
    image = np.zeros((120, 200), np.float32)
    for x, y in [(10, 10), (60, 30), (130, 70), (170, 20)]:
        image[y:y + 15, x:x + 12] = 1.0
    boxes = np.array([[10, 10, 22, 25]], np.float32)
    assert flip_agreement(_Finder(), image, boxes) == 1.0
    patterns = [[0, 90, 20, 110], [40, 90, 60, 110], [100, 95, 115, 110]]  # not where their mirrors are
    assert flip_agreement(_Finder(patterns), image, boxes) == pytest.approx(2 * 4 / 14)


def test_the_images_that_choose_are_spread_through_the_input_and_a_stack_gives_its_middle_plane(tmp_path):
    import tifffile

    from napari_cellboxify.flip_agreement import planes_to_choose_on, spread

    assert spread(1) == [0] and spread(2) == [0, 1] and spread(3) == [0, 1, 2]
    assert spread(10) == [0, 4, 9] and spread(101) == [0, 50, 100]
    stack = np.stack([np.full((40, 50), z, np.uint8) for z in range(5)])
    tifffile.imwrite(tmp_path / "a_stack.tif", stack)
    for name in ("b.tif", "c.tif", "d.tif"):
        tifffile.imwrite(tmp_path / name, np.full((30, 20), ord(name[0]), np.uint8))
    planes = planes_to_choose_on(sorted(tmp_path.glob("*.tif")))
    assert [p.shape for p in planes] == [(40, 50), (30, 20), (30, 20)]
    assert planes[0].max() == 2 and planes[1].max() == ord("c") and planes[2].max() == ord("d")  # files 0, 2, 3 of 4


def test_the_shipped_file_that_agrees_most_with_itself_is_chosen_ties_going_to_the_default(monkeypatch):
    import napari_cellboxify.predict as predict
    from napari_cellboxify.flip_agreement import choose_shipped

    image = np.zeros((120, 200), np.float32)
    for x, y in [(10, 10), (60, 30), (130, 70), (170, 20)]:
        image[y:y + 15, x:x + 12] = 1.0
    finders = {"cells": _Finder([[0, 90, 20, 110]]), "nuclei": _Finder(), "neurons": _Finder([[40, 90, 60, 110]])}
    asked = []

    class Loaded:
        def __init__(self, name):
            self.name = name

        def with_settings(self, **settings):
            asked.append(settings)  # measured as the rule was chosen: score 0.5, no test-time augmentation
            return finders[self.name]

    monkeypatch.setattr(predict.Predictor, "from_weights", classmethod(lambda cls, name, device: Loaded(name)))
    seen = []
    chosen, agreement = choose_shipped([image, image], progress=lambda done, total: seen.append((done, total)))
    assert chosen == "nuclei" and agreement["nuclei"] == 1.0 > agreement["cells"] == agreement["neurons"]
    assert asked == [{"score_threshold": 0.5, "tta": "off"}] * 3 and seen[-1] == (6, 6)
    finders["nuclei"] = _Finder([[100, 95, 115, 110]])
    finders["cells"] = _Finder([[100, 95, 115, 110]])
    assert choose_shipped([image])[0] == "cells"  # a tie: the default
    with pytest.raises(ValueError, match="no image"):
        choose_shipped([])


def test_a_runner_up_within_the_margin_is_named_as_a_close_call():
    from napari_cellboxify.flip_agreement import CLOSE_CALL, close_call

    assert close_call({"cells": 0.80, "nuclei": 0.64, "neurons": 0.79}, "cells") == "neurons"
    assert close_call({"cells": 0.80, "nuclei": 0.64, "neurons": 0.80}, "cells") == "neurons"  # a tie, to the default
    assert close_call({"cells": 0.80, "nuclei": 0.64, "neurons": 0.80 - CLOSE_CALL - 0.01}, "cells") is None
    assert close_call({"nuclei": 0.9}, "nuclei") is None
