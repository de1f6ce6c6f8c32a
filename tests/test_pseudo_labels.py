"""Self-training on unlabeled images: pseudo-boxes with scores, ignore regions in the detector's sampling."""

import json

import numpy as np
import pytest
import torch

from napari_cellboxify.config import CellBoxifyConfig, ConfigError, DataConfig
from napari_cellboxify.data.coco import CocoError, PseudoLabelSource, add_pseudo_labels, load_coco
from napari_cellboxify.data.dataset import MixedSource, StepBatches
from napari_cellboxify.data.transforms import augment, augment_with_ignore
from napari_cellboxify.model import build_model
from napari_cellboxify.model.ignore import mark_ignored

from conftest import tiny_config


def test_mark_ignored_turns_only_overlapping_background_into_ignore():
    candidates = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], dtype=torch.float32)
    labels = torch.tensor([0, 1, 0, 0])
    ignore = torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)
    out = mark_ignored(labels, candidates, ignore)
    assert out.tolist() == [-1, 1, -1, 0]  # positives stay; far background stays background
    assert labels.tolist() == [0, 1, 0, 0]  # input untouched
    assert mark_ignored(labels, candidates, None).tolist() == [0, 1, 0, 0]
    assert mark_ignored(labels, candidates, torch.zeros(0, 4)).tolist() == [0, 1, 0, 0]


def _target(boxes, ignore=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.ones(len(boxes), dtype=torch.int64)}
    if ignore is not None:
        t["ignore_boxes"] = torch.tensor(ignore, dtype=torch.float32)
    return t


def test_rpn_and_box_head_never_sample_background_on_an_ignore_region():
    torch.manual_seed(0)
    model = build_model(tiny_config()).train()
    cell, unsure = [8.0, 8.0, 40.0, 40.0], [60.0, 60.0, 90.0, 92.0]
    anchors = [torch.tensor([[x, y, x + 30, y + 30] for x in range(0, 70, 2) for y in range(0, 70, 2)],
                            dtype=torch.float32)]
    plain, _ = model.rpn.assign_targets_to_anchors(anchors, [_target([cell])])
    marked, _ = model.rpn.assign_targets_to_anchors(anchors, [_target([cell], [unsure])])
    overlap = mark_ignored(torch.zeros(len(anchors[0])), anchors[0], torch.tensor([unsure])) == -1
    assert overlap.any()
    assert (marked[0][overlap & (plain[0] == 0)] == -1).all()  # was background, now left out
    assert torch.equal(marked[0][~overlap], plain[0][~overlap])  # everything else as before
    assert (marked[0] == 1).sum() == (plain[0] == 1).sum()

    # box head: proposals all over the image, the sampled background never sits on the ignore region
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(600, 2, generator=g) * 80
    wh = 8 + torch.rand(600, 2, generator=g) * 30
    proposals = [torch.cat([xy, xy + wh], dim=1)]
    for target, expect_ignored in ((_target([cell]), False), (_target([cell], [unsure]), True)):
        props, _, labels, _ = model.roi_heads.select_training_samples([p.clone() for p in proposals], [target])
        on_unsure = mark_ignored(torch.zeros(len(props[0])), props[0], torch.tensor([unsure])) == -1
        background_on_unsure = int((on_unsure & (labels[0] == 0)).sum())
        assert (background_on_unsure == 0) == expect_ignored, background_on_unsure
        assert (labels[0] >= 0).all()  # the sampler draws no ignored proposal


def test_training_step_with_ignore_regions_backpropagates():
    model = build_model(tiny_config()).train()
    image = torch.rand(3, 96, 96)
    losses = model([image], [_target([[10, 10, 40, 40]], [[50, 50, 80, 80]])])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("seed", range(6))
def test_ignore_regions_follow_the_same_augmentation_as_the_boxes(seed):
    rng_image = np.random.default_rng(seed)
    image = rng_image.random((90, 120)).astype(np.float32)
    boxes = np.array([[10, 10, 30, 40], [60, 20, 100, 70]], np.float32)
    cfg = DataConfig(crop_size=64, min_box_size=0)
    im_a, b_a, _ = augment(image, boxes, None, np.random.default_rng(seed), cfg)
    # the same boxes as ignore regions land exactly where the boxes land; the image is the same crop
    im_b, b_b, _, ign = augment_with_ignore(image, boxes, boxes, None, np.random.default_rng(seed), cfg)
    np.testing.assert_array_equal(im_a, im_b)
    np.testing.assert_allclose(b_a, b_b)
    np.testing.assert_allclose(ign, b_a)


def _pseudo_coco(folder, images_dir, scores_per_image, with_score=True, name="pseudo.json"):
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    names = sorted(p.name for p in images_dir.iterdir())
    for i, scores in enumerate(scores_per_image, start=1):
        coco["images"].append({"id": i, "file_name": names[i - 1]})
        for k, s in enumerate(scores):
            ann = {"id": len(coco["annotations"]) + 1, "image_id": i, "bbox": [5 + 10 * k, 5, 8, 8]}
            if with_score:
                ann["score"] = s
            coco["annotations"].append(ann)
    path = folder / name
    path.write_text(json.dumps(coco))
    return path


def test_pseudo_label_source_splits_cells_ignore_and_background(tmp_path, synthetic_coco):
    _, images_dir = synthetic_coco
    config = CellBoxifyConfig()
    config.data.pseudo_score_thresh, config.data.pseudo_ignore_thresh = 0.7, 0.3
    path = _pseudo_coco(tmp_path, images_dir, [[0.9, 0.5, 0.1, 0.75], [0.2, 0.4], [0.95]])
    source = PseudoLabelSource(load_coco(path, images_dir), config)
    assert len(source) == 2  # the image with no confident box is left out
    first = source.load(0)
    np.testing.assert_allclose(first.boxes_xyxy[:, 0], [5, 35])  # scores 0.9 and 0.75
    np.testing.assert_allclose(first.ignore_xyxy[:, 0], [15])  # score 0.5; 0.1 is background
    assert source.load(1).ignore_xyxy.shape == (0, 4)

    with pytest.raises(CocoError, match="score"):
        PseudoLabelSource(load_coco(_pseudo_coco(tmp_path, images_dir, [[0.9]], with_score=False, name="no_score.json"), images_dir), config)
    config.data.pseudo_score_thresh = 0.99
    with pytest.raises(CocoError, match="no image has a box scoring"):
        add_pseudo_labels(source, path, images_dir, config)


def test_mixed_source_draws_the_requested_share_and_batches_carry_ignore_boxes(tmp_path, synthetic_coco):
    from napari_cellboxify.data.coco import CocoSource

    json_path, images_dir = synthetic_coco  # 3 labeled images
    config = tiny_config(steps=40)
    main = CocoSource(load_coco(json_path, images_dir), config)
    pseudo = PseudoLabelSource(load_coco(_pseudo_coco(tmp_path, images_dir, [[0.9, 0.5]] * 3), images_dir), config)
    for fraction in (0.25, 0.5, 0.75):
        mixed = MixedSource(main, pseudo, fraction)
        assert abs(mixed.extra_fraction - fraction) < 0.1
    mixed = MixedSource(main, pseudo, 0.5)
    config.data.crop_size = None
    batches = StepBatches(mixed, config)
    targets = [t for i in range(len(batches)) for _, t in batches[i]]
    with_ignore = sum("ignore_boxes" in t for t in targets)
    assert 0.3 < with_ignore / len(targets) < 0.7
    with pytest.raises(ValueError):
        MixedSource(main, pseudo, 1.0)


def test_pseudo_thresholds_are_validated():
    config = CellBoxifyConfig()
    config.data.pseudo_ignore_thresh = 0.9  # above the cell threshold
    with pytest.raises(ConfigError, match="pseudo"):
        config.validate()
