"""By-hand check: do the labels of each Sartorius exact-label image sit on its cells?

For each image of sartorius-2021/original and the three exact-label images of sartorius-2021/reconstructed, two
measures of how far the labels are from the cells in the pixels:
- with a shipped file's outlines (``cells`` and ``neurons``, trained apart): each labelled cell's best-overlapping
  outline (score >= 0.3, mask IoU > 0.3), and the median offset of its centroid from the label's (dx, dy in px);
- without any model: the integer shift (within +-8 px) of the labelled foreground that puts it on the most image
  texture (local standard deviation, 5 px window; noisy to a few px, but model-free).
Run from the repository root (about 3 minutes on 2 CPU cores):

    python docs/experiments/2026-12-07-misregistered-cortical-labels.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_cellboxify.data.coco import coco_index
from napari_cellboxify.data.images import read_image
from napari_cellboxify.geometry import mask_iou, polygon_to_mask
from napari_cellboxify.predict import Predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _scored_sets import SARTORIUS_EXACT  # noqa: E402

ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "sartorius-2021"
torch.set_num_threads(2)


def labels(index, im):
    lab = np.zeros((im["height"], im["width"]), int)
    for k, ann in enumerate(index.loadAnns(index.getAnnIds(imgIds=[im["id"]])), start=1):
        lab[index.annToMask(ann) > 0] = k
    return lab


def model_offset(predictor, image, lab):
    outlines = []
    prediction = predictor.segment_image(image)
    for poly, score in zip(prediction.polygons_xy, prediction.scores):
        if score >= 0.3:
            outlines.append(polygon_to_mask(poly, lab.shape))
    offsets = []
    for k in range(1, lab.max() + 1):
        cell = lab == k
        if not cell.any() or not outlines:
            continue
        ious = [mask_iou(cell, m) for m in outlines]
        j = int(np.argmax(ious))
        if ious[j] > 0.3:
            gy, gx = np.nonzero(cell)
            py, px = np.nonzero(outlines[j])
            offsets.append((px.mean() - gx.mean(), py.mean() - gy.mean()))
    return np.median(offsets, axis=0), len(offsets), int(lab.max())


def texture_shift(image, lab):
    img = image.astype(float) if image.ndim == 2 else image[..., 0].astype(float)
    texture = np.sqrt(np.maximum(ndi.uniform_filter(img ** 2, 5) - ndi.uniform_filter(img, 5) ** 2, 0))
    fg = lab > 0
    best = max((texture[np.roll(fg, (dy, dx), axis=(0, 1))].mean(), dx, dy)
               for dy in range(-8, 9) for dx in range(-8, 9))
    return best[1], best[2]


predictors = {name: Predictor.from_weights(name, "cpu") for name in ("cells", "neurons")}
print("| image | cell type | labelled cells | outlines matched: cells / neurons | offset outline - label "
      "(dx, dy px): cells | neurons | texture shift of the labels (dx, dy px) |")
print("|---|---|---|---|---|---|---|")
for sub, keep in (("original", lambda im: True),
                  ("reconstructed", lambda im: im["file_name"].startswith(SARTORIUS_EXACT))):
    data = json.loads((ROOT / sub / "annotations.json").read_text())
    index = coco_index(data)
    for im in data["images"]:
        if not keep(im):
            continue
        image = read_image(ROOT / sub / "images" / im["file_name"])
        lab = labels(index, im)
        found = {name: model_offset(p, image, lab) for name, p in predictors.items()}
        tx = texture_shift(image, lab)
        print(f"| {sub}/{im['file_name']} | {im.get('cell_type')} | {lab.max()} | "
              f"{found['cells'][1]} / {found['neurons'][1]} | "
              + " | ".join(f"{o[0][0]:+.1f}, {o[0][1]:+.1f}" for o in found.values())
              + f" | {tx[0]:+d}, {tx[1]:+d} |", flush=True)
