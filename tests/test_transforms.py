import numpy as np
import pytest

from napari_cellboxify.config import DataConfig
from napari_cellboxify.data.transforms import (
    ImageError, augment, flip_rotate, normalize_image, random_scale_crop, rotate90, to_gray,
)
from napari_cellboxify.geometry import labels_to_boxes


def _boxes_from_masks(masks):
    out = []
    for m in masks:
        rows, cols = np.nonzero(m)
        out.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return np.array(out, dtype=np.float32)


def _scene(rng):
    h, w = 90, 120
    masks = np.zeros((3, h, w), np.uint8)
    masks[0, 10:30, 5:25] = 1
    masks[1, 40:80, 60:70] = 1
    masks[2, 5:15, 90:118] = 1
    image = rng.random((h, w)).astype(np.float32)
    return image, _boxes_from_masks(masks), masks


@pytest.mark.parametrize("seed", range(12))
def test_boxes_follow_every_transform(seed):
    """After any augmentation, each box is exactly the box of its (transformed) mask."""
    rng = np.random.default_rng(seed)
    image, boxes, masks = _scene(rng)
    cfg = DataConfig(crop_size=None, train_sizes=(520,), min_box_size=0)  # scale 1: exact pixel boxes
    image2, boxes2, masks2 = flip_rotate(image, boxes, masks, rng, cfg)
    assert image2.shape == masks2.shape[1:]
    np.testing.assert_allclose(boxes2, _boxes_from_masks(masks2))


def test_rotate90_matches_numpy():
    rng = np.random.default_rng(0)
    image, boxes, masks = _scene(rng)
    image2, boxes2, masks2 = rotate90(image, boxes, masks)
    np.testing.assert_array_equal(image2, np.rot90(image))
    np.testing.assert_allclose(boxes2, _boxes_from_masks(masks2))


@pytest.mark.parametrize("seed", range(8))
def test_scale_and_crop_keep_boxes_on_their_masks(seed):
    rng = np.random.default_rng(seed)
    image, boxes, masks = _scene(rng)
    cfg = DataConfig(crop_size=64, min_box_size=0)
    image2, boxes2, masks2 = random_scale_crop(image, boxes, masks, rng, cfg)
    assert image2.shape == masks2.shape[1:]
    for box, mask in zip(boxes2, masks2):
        if mask.sum() == 0:
            continue
        expected = _boxes_from_masks(mask[None])[0]
        assert np.abs(box - expected).max() <= 2.0  # nearest-neighbour resampling of the mask: <= 1-2 px


def test_augment_drops_boxes_that_left_the_crop():
    rng = np.random.default_rng(3)
    image, boxes, masks = _scene(rng)
    cfg = DataConfig(crop_size=40, min_box_size=2)
    for _ in range(10):
        _, b, m = augment(image, boxes, masks, rng, cfg)
        assert len(b) == len(m)
        assert ((b[:, 2] - b[:, 0]) >= 2).all() and ((b[:, 3] - b[:, 1]) >= 2).all()


def test_normalize_handles_every_dtype_the_same_way():
    rng = np.random.default_rng(0)
    base = rng.random((64, 64))
    u8 = (base * 255).astype(np.uint8)
    u16 = (base * 65535).astype(np.uint16)
    rgb = np.stack([u8] * 3, axis=-1)
    outs = [normalize_image(x) for x in (u8, u16, rgb, base.astype(np.float32))]
    for out in outs:
        assert out.dtype == np.float32 and out.shape == (64, 64) and 0 <= out.min() and out.max() <= 1
    for out in outs[1:]:
        assert np.abs(out - outs[0]).mean() < 0.02


def test_normalize_nan_inf_and_constant_images():
    image = np.ones((32, 32), np.float32)
    image[0, 0] = np.nan
    image[1, 1] = np.inf
    out = normalize_image(image)
    assert np.isfinite(out).all()
    assert (normalize_image(np.full((16, 16), 7, np.uint16)) == 0).all()
    assert normalize_image(np.zeros((1, 1), np.uint8)).shape == (1, 1)


def test_stacks_are_refused_with_a_clear_message():
    with pytest.raises(ImageError, match="frame"):
        to_gray(np.zeros((5, 32, 32)))


def test_labels_to_boxes():
    labels = np.zeros((10, 10), np.uint16)
    labels[2:5, 3:7] = 4
    ids, boxes = labels_to_boxes(labels)
    assert ids.tolist() == [4] and boxes.tolist() == [[3, 2, 7, 5]]


def test_rgba_drops_alpha_and_matches_gray():
    rng = np.random.default_rng(1)
    u8 = (rng.random((40, 40)) * 255).astype(np.uint8)
    rgba = np.dstack([u8, u8, u8, np.full_like(u8, 7)])
    assert np.abs(normalize_image(rgba) - normalize_image(u8)).mean() < 0.02


def test_non_image_files_get_a_clear_error(tmp_path):
    from napari_cellboxify.data.images import ImageReadError, read_image

    bogus = tmp_path / "notes.tif"
    bogus.write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(bogus)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
