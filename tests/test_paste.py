"""Mask pasting on the polygons' device (model/paste.py) gives the pixels of the host path (scikit-image)."""

import numpy as np
import pytest
import torch

from napari_cellboxify.geometry import box_inscribed_ellipse, polygons_to_masks
from napari_cellboxify.model.paste import fill_windows, polygons_to_masks_torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _polygons(n: int, seed: int = 0) -> np.ndarray:
    """Wiggly (partly concave) ellipses of 2-120 px, some crossing the image border, one fully outside."""
    rng = np.random.default_rng(seed)
    polys = []
    for _ in range(n):
        x, y = rng.uniform(-30, 700), rng.uniform(-30, 500)
        w, h = rng.uniform(2, 120, 2)
        poly = box_inscribed_ellipse(np.array([x, y, x + w, y + h]), 64)
        polys.append(poly + rng.normal(0, 2, poly.shape))
    polys.append(box_inscribed_ellipse(np.array([800.0, 600.0, 830.0, 640.0]), 64))
    return np.stack(polys).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_same_pixels_as_scikit_image(device):
    polys = _polygons(200)
    expected = polygons_to_masks(polys, (520, 704))
    got = polygons_to_masks_torch(torch.from_numpy(polys).to(device), (520, 704))
    assert got.device.type == device and got.dtype == torch.bool and got.shape == expected.shape
    assert expected.sum() > 10_000  # the check compares real cells, not empty masks
    # Equal up to pixel centres that lie on an edge within float error, where the two tests may round apart.
    per_mask = (got.cpu().numpy() != expected).reshape(len(polys), -1).sum(axis=1)
    assert per_mask.max() <= 1 and per_mask.sum() <= 3, per_mask.sum()


def test_star_and_degenerate_polygons():
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    radius = np.where(np.arange(64) % 2 == 0, 30.0, 10.0)  # a concave 32-pointed star
    star = np.stack([50 + radius * np.cos(theta), 40 + radius * np.sin(theta)], axis=1)
    flat = np.stack([np.linspace(5, 20, 64), np.full(64, 7.3)], axis=1)  # zero area: no pixel
    polys = np.stack([star, flat]).astype(np.float32)
    got = polygons_to_masks_torch(torch.from_numpy(polys), (90, 100)).numpy()
    np.testing.assert_array_equal(got, polygons_to_masks(polys, (90, 100)))
    assert got[0].sum() > 500 and got[1].sum() == 0


def test_empty_input():
    got = polygons_to_masks_torch(torch.zeros((0, 64, 2)), (30, 40))
    assert got.shape == (0, 30, 40) and got.dtype == torch.bool


def test_window_fill_of_stacked_outlines_matches_one_by_one():
    """TTA fills every view's outline of an object in that object's window (fill_windows with S > 1)."""
    polys = torch.from_numpy(_polygons(40, seed=1)[:-1])  # the last one lies outside the image
    lo = torch.floor(polys.amin(dim=1)).long().clamp(min=0) + 1  # windows that cut some outlines off
    size = torch.full((len(polys), 2), 30, dtype=torch.long)
    views = torch.stack([polys, polys + 3.0, polys.flip(1)])  # a shifted and a reversed copy
    stacked = fill_windows(views, lo, size, 30, 30)
    assert stacked.shape == (3, len(polys), 30, 30) and stacked.any()
    for s in range(3):
        np.testing.assert_array_equal(stacked[s].numpy(), fill_windows(views[s : s + 1], lo, size, 30, 30)[0].numpy())
    # and each window holds the pixels of the full-image mask there
    full = polygons_to_masks(polys.numpy(), (560, 740))
    for k in range(len(polys)):
        c, r = lo[k].tolist()
        window = full[k, r : r + 30, c : c + 30]
        assert (stacked[0, k, : window.shape[0], : window.shape[1]].numpy() != window).sum() <= 1
