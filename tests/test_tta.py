"""Test-time augmentation: view geometry, box fusion, outline averaging, and the Predictor's use of them."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from napari_cellboxify.config import TTA_MODES
from napari_cellboxify.geometry import mask_iou, polygon_to_mask
from napari_cellboxify.model import build_model
from napari_cellboxify.predict import Predictor
from napari_cellboxify.tta import (TTA_VIEWS, average_outlines, boxes_from_view, boxes_to_view, points_from_view,
                                   segment_with_tta, view_tensor, weighted_box_fusion)


@pytest.mark.parametrize("k", range(8))
def test_a_box_drawn_around_a_pixel_follows_it_into_every_view_and_back(k):
    h, w = 30, 50
    image = torch.zeros(1, h, w)
    image[0, 7, 31] = 1.0  # pixel (row 7, col 31): its square is x 31..32, y 7..8
    box = torch.tensor([[31.0, 7.0, 32.0, 8.0]])
    viewed = view_tensor(image, k)
    row, col = (int(v) for v in torch.nonzero(viewed[0])[0])
    in_view = boxes_to_view(box, k, (h, w))
    assert in_view.tolist() == [[col, row, col + 1, row + 1]]
    assert torch.equal(boxes_from_view(in_view, k, (h, w)), box)
    centre = torch.tensor([[col + 0.5, row + 0.5]])
    assert torch.allclose(points_from_view(centre, k, (h, w)), torch.tensor([[31.5, 7.5]]))


def test_every_tta_setting_has_its_views():
    assert tuple(TTA_VIEWS) == TTA_MODES  # the config, the CLI and the panel list TTA_MODES


def test_fusion_averages_one_cell_seen_by_every_view_and_discounts_what_one_view_saw():
    cell = np.array([10.0, 10.0, 30.0, 30.0])
    debris = np.array([60.0, 60.0, 64.0, 64.0])
    boxes = [np.stack([cell, debris]), (cell + 2)[None], (cell - 2)[None], (cell + 1)[None]]
    scores = [np.array([0.9, 0.8]), np.array([0.9]), np.array([0.6]), np.array([0.6])]
    fused, fused_scores, support = weighted_box_fusion(boxes, scores)
    assert len(fused) == 2
    expected = (0.9 * cell + 0.9 * (cell + 2) + 0.6 * (cell - 2) + 0.6 * (cell + 1)) / 3.0
    np.testing.assert_allclose(fused[0], expected, atol=1e-4)
    assert fused_scores.tolist() == pytest.approx([0.75, 0.2])  # (0.9+0.9+0.6+0.6)/4 and 0.8/4
    assert support.tolist() == [4, 1]


def test_fusion_keeps_two_touching_cells_of_one_view_apart():
    # one view's NMS kept both boxes: they are two cells even though they overlap more than the fusion IoU
    a, b = np.array([0.0, 0.0, 20.0, 20.0]), np.array([2.0, 0.0, 22.0, 20.0])
    fused, fused_scores, support = weighted_box_fusion([np.stack([a, b])], [np.array([0.9, 0.8])])
    assert len(fused) == 2 and support.tolist() == [1, 1]
    assert fused_scores.tolist() == pytest.approx([0.9, 0.8])


def test_fusion_of_nothing_is_empty():
    fused, fused_scores, support = weighted_box_fusion([np.zeros((0, 4))] * 3, [np.zeros(0)] * 3)
    assert fused.shape == (0, 4) and len(fused_scores) == 0 and len(support) == 0


def _square(x0, y0, x1, y1, n=16):
    t = np.linspace(0, 4, n, endpoint=False)
    xs = np.interp(t, [0, 1, 2, 3, 4], [x0, x1, x1, x0, x0])
    ys = np.interp(t, [0, 1, 2, 3, 4], [y0, y0, y1, y1, y0])
    return np.stack([xs, ys], 1).astype(np.float32)


def test_averaged_outline_is_the_majority_of_the_views():
    shape = (40, 40)
    views = [_square(10, 10, 30, 30), _square(10, 10, 30, 30), _square(10, 10, 20, 30)]
    box = np.array([[10, 10, 30, 30]], np.float32)
    out = average_outlines([v[None] for v in views], box, shape, num_vertices=32)
    assert out.shape == (1, 32, 2)
    majority = polygon_to_mask(views[0], shape)
    assert mask_iou(polygon_to_mask(out[0], shape), majority) > 0.95
    # a minority (1 of 3) does not make it in: the left half alone would be IoU 0.5
    assert mask_iou(polygon_to_mask(out[0], shape), polygon_to_mask(views[2], shape)) < 0.6


def test_averaged_outline_falls_back_to_the_first_view_when_the_views_disagree_everywhere():
    shape = (40, 40)
    views = [_square(2, 2, 10, 10)[None], _square(20, 20, 30, 30)[None], _square(2, 20, 10, 30)[None]]
    out = average_outlines(views, np.array([[2, 2, 30, 30]], np.float32), shape, num_vertices=16)
    assert mask_iou(polygon_to_mask(out[0], shape), polygon_to_mask(views[0][0], shape)) > 0.9


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return build_model(tiny_config(), load_pretrained=False).eval()


def _image(seed=0, shape=(96, 128)):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.random(shape, dtype=np.float32))
    return image.expand(3, *shape).contiguous()


def test_one_view_is_the_plain_model(random_model):
    image = _image()
    boxes, scores, polys = segment_with_tta(random_model, image, TTA_VIEWS["off"])
    with torch.no_grad():
        out = random_model([image])[0]
    assert len(boxes) > 0
    np.testing.assert_allclose(boxes, out["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, out["scores"].numpy(), atol=1e-6)
    np.testing.assert_allclose(polys, out["polygons"].numpy(), atol=1e-3)


def test_eight_flips_give_the_same_cells_whichever_way_the_image_comes(random_model):
    # The 8 views of an image and of its mirror image are the same 8 images: the merged answer must mirror too.
    image = _image(1)
    boxes, scores, polys = segment_with_tta(random_model, image, TTA_VIEWS["flips"], score_threshold=0.2)
    m_boxes, m_scores, _ = segment_with_tta(random_model, image.flip(-1), TTA_VIEWS["flips"], score_threshold=0.2)
    assert len(boxes) > 0 and polys.shape == (len(boxes), random_model.config.model.num_vertices, 2)
    back = boxes_from_view(torch.from_numpy(m_boxes), 1, tuple(image.shape[-2:])).numpy()
    order, m_order = np.lexsort(boxes.T), np.lexsort(back.T)
    np.testing.assert_allclose(back[m_order], boxes[order], atol=1e-2)
    np.testing.assert_allclose(m_scores[m_order], scores[order], atol=1e-5)


def test_the_predictor_applies_its_tta_setting_to_images_and_to_drawn_boxes(random_model):
    predictor = Predictor(random_model, "cpu", score_threshold=0.2)
    image = _image(2).numpy()[0]
    plain = predictor.segment_image(image)
    predictor.tta = "flips+scales"
    merged = predictor.segment_image(image)
    assert predictor.config.model.tta == "flips+scales"
    assert len(merged) > 0 and (merged.scores >= 0.2).all()
    assert not np.array_equal(merged.boxes_xyxy, plain.boxes_xyxy[: len(merged)])
    outlined = predictor.segment_boxes(image, merged.boxes_xyxy)
    assert outlined.polygons_xy.shape == merged.polygons_xy.shape
    with pytest.raises(ValueError, match="off, flips, flips\\+scales"):
        predictor.tta = "rotate"
    predictor.tta = "off"
