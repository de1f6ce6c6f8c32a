"""Memory that follows the tile: large TIFFs read by regions, normalised per tile, written window by window."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import tiny_config

LAYOUTS = {
    "tiled zlib": dict(tile=(256, 256), compression="zlib"),
    "strips zlib": dict(compression="zlib", rowsperstrip=64),
    "strips lzw, odd rows": dict(compression="lzw", rowsperstrip=7),
    "uncompressed": {},
    "uncompressed big-endian": dict(byteorder=">"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tiff_regions_read_exactly_what_the_whole_file_holds(tmp_path, layout):
    from napari_cellboxify.data.images import TiffRegions

    image = np.random.default_rng(0).integers(0, 65535, (700, 900)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image, **LAYOUTS[layout])
    regions = TiffRegions(tmp_path / "a.tif")
    assert regions.shape == image.shape and regions.dtype == image.dtype
    for y0, y1, x0, x1 in [(0, 700, 0, 900), (10, 300, 257, 899), (699, 700, 5, 6), (500, 740, -3, 900)]:
        assert np.array_equal(regions.read(y0, y1, x0, x1), image[max(0, y0):y1, max(0, x0):x1])
    assert np.array_equal(regions[3::7, 5::3], image[3::7, 5::3])  # a strided sample, band by band
    assert np.array_equal(np.asarray(regions), image)


def test_rgb_tiffs_are_read_by_regions_and_stacks_whole(tmp_path):
    from napari_cellboxify.data import images

    rgb = np.random.default_rng(0).integers(0, 255, (600, 700, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, tile=(128, 128), compression="zlib", photometric="rgb")
    regions = images.TiffRegions(tmp_path / "rgb.tif")
    assert np.array_equal(regions.read(100, 333, 50, 699), rgb[100:333, 50:699])
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(images.ImageReadError):
        images.TiffRegions(tmp_path / "stack.tif")
    # open_image: regions only past LAZY_PIXELS, the whole array otherwise
    assert isinstance(images.open_image(tmp_path / "rgb.tif"), np.ndarray)
    images_small = images.LAZY_PIXELS
    try:
        images.LAZY_PIXELS = 1000
        assert isinstance(images.open_image(tmp_path / "rgb.tif"), images.TiffRegions)
        assert isinstance(images.open_image(tmp_path / "stack.tif"), np.ndarray)
    finally:
        images.LAZY_PIXELS = images_small


def _random_prediction(shape=(700, 900), n=300, seed=0):
    from napari_cellboxify.predict import Prediction

    rng = np.random.default_rng(seed)
    h, w = shape
    centres, radii = rng.uniform([0, 0], [w, h], (n, 2)), rng.uniform(4, 30, (n, 1))
    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)[None, :]
    stretch = rng.uniform(0.5, 1.5, (n, 1))
    polys = centres[:, None, :] + np.stack([radii * np.cos(theta), radii * stretch * np.sin(theta)], -1)
    polys = polys.astype(np.float32)  # cells overlap and cross the image's edges
    boxes = np.concatenate([polys.min(1), polys.max(1)], 1)
    return Prediction(polys, boxes, rng.random(n).astype(np.float32), shape)


@pytest.mark.parametrize("window", [100, 256, 5000])
def test_window_by_window_outputs_equal_those_of_the_whole_label_image(tmp_path, window):
    from napari_cellboxify import export

    pred = _random_prediction()
    labels = pred.labels()
    intensity = np.random.default_rng(1).integers(0, 255, pred.shape).astype(np.uint8)
    whole, windowed = export.measurements(labels, intensity), export.prediction_measurements(pred, intensity, window)
    assert list(whole) == list(windowed)
    for key in whole:
        np.testing.assert_allclose(np.asarray(whole[key]), windowed[key], rtol=0, atol=1e-9)
    scores = dict(zip(pred.label_ids().tolist(), pred.scores.tolist()))
    assert export.prediction_coco_annotations(pred, 3, 10, scores, window) == \
        export.labels_to_coco_annotations(labels, 3, 10, scores)
    export.write_prediction_tiff(tmp_path / "w.tif", pred, tile=128)
    assert np.array_equal(tifffile.imread(tmp_path / "w.tif"), labels)


def test_window_rle_is_pycocotools_encoding_of_the_full_mask():
    from pycocotools import mask as mask_utils

    from napari_cellboxify.export import window_rle

    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = rng.integers(1, 40, 2)
        mh, mw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        y0, x0 = rng.integers(0, h - mh + 1), rng.integers(0, w - mw + 1)
        mask = rng.random((mh, mw)) < rng.random()
        full = np.zeros((h, w), np.uint8, order="F")
        full[y0:y0 + mh, x0:x0 + mw] = mask
        expected = mask_utils.encode(full)
        assert window_rle(mask, y0, x0, (h, w))["counts"] == expected["counts"].decode("ascii")


def test_tiles_of_a_large_image_are_normalised_alike_and_its_empty_tiles_skipped(monkeypatch):
    import torch

    from napari_cellboxify import predict
    from napari_cellboxify.data.synthetic import synthetic_cells
    from napari_cellboxify.model import build_model

    monkeypatch.setattr(predict, "LARGE_SIDE", 256)  # "large" at a test's size
    image = np.zeros((1024, 1024), np.uint8)
    cells = synthetic_cells((256, 256), 12, seed=0).image
    image[384:640, 384:640] = (cells * 255.0 / max(1, cells.max())).astype(np.uint8)
    torch.manual_seed(0)
    predictor = predict.Predictor(build_model(tiny_config()), "cpu", score_threshold=0.0)
    seen = []
    real = predictor.model.forward
    monkeypatch.setattr(predictor.model, "forward", lambda images, targets=None, **kw: seen.append(1) or real(images, **kw))
    ticks = []
    pred = predictor.segment(image, tile=256, overlap=32, progress=lambda done, total: ticks.append((done, total)))
    assert pred.shape == (1024, 1024)
    assert ticks[-1][0] == ticks[-1][1] == len(ticks) > 1  # the progress counts tiles
    assert 0 < len(seen) < len(ticks)  # blank tiles never reach the network


def _peak_rss_mb(tmp_path: Path, side: int, weights: Path) -> tuple[float, dict]:
    """Peak RSS (MB) of a fresh ``cellboxify predict`` (label TIFF, COCO, CSV) on a side² TIFF that is blank but
    for one patch of cells."""
    from napari_cellboxify.data.synthetic import synthetic_cells

    cells = synthetic_cells((512, 512), 40, seed=0).image.astype(np.uint8)

    def tiles():
        for y in range(0, side, 512):
            for x in range(0, side, 512):
                yield cells if (y, x) == (1024, 1024) else np.zeros((512, 512), np.uint8)

    path = tmp_path / f"scan_{side}.tif"
    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(512, 512), compression="zlib")
    out = tmp_path / f"out_{side}"
    code = ("import resource, sys; from napari_cellboxify.cli import main; rc = main(sys.argv[1:]); "
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(path), "--out", str(out), "--weights",
                             str(weights), "--format", "tiff,coco,csv", "--score-threshold", "0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rss = float(result.stdout.split("RSS")[-1])
    return rss, {"labels": tifffile.TiffFile(out / f"scan_{side}_labels.tif").pages[0].shape,
                 "cells": len(json.loads((out / "predictions_coco.json").read_text())["annotations"])}


def test_peak_memory_of_predict_stays_flat_from_4096_to_12288_pixels_a_side(tmp_path):
    import torch

    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.model import build_model

    torch.manual_seed(0)
    config = tiny_config()
    config.model.box_score_thresh = 0.0
    save_weights(tmp_path / "w.pt", build_model(config), config)
    small, small_out = _peak_rss_mb(tmp_path, 4096, tmp_path / "w.pt")
    large, large_out = _peak_rss_mb(tmp_path, 12288, tmp_path / "w.pt")
    assert large_out["labels"] == (12288, 12288) and large_out["cells"] > 0
    # 9x the pixels: a whole-image float copy alone would add 1.1 GB (float64), the 8-bit image 134 MB
    assert large - small < 120, (small, large)
