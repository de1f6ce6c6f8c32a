"""The box-only losses on real phase-contrast cells: they must prefer the true contour to the box they start from.

Without this, a network trained with them learns box-like masks (the first version: the local term with pairs only inside
the box, and Chan-Vese on intensity, both ranked the filled box lowest on LIVECell). The full table, with more
cells and variants, is benchmarks/bench_loss_fit.py.
"""

import numpy as np
import pytest
import torch

from napari_cellboxify.config import LossConfig
from napari_cellboxify.data.coco import load_coco
from napari_cellboxify.data.images import read_image
from napari_cellboxify.data.transforms import normalize_image
from napari_cellboxify.geometry import resample_polygon
from napari_cellboxify.losses.crops import gt_box_crops
from napari_cellboxify.losses.pairwise import global_pairwise_loss, local_pairwise_loss
from napari_cellboxify.losses.rasterize import polygons_to_box_frame, soft_rasterize_logits
from napari_cellboxify.model.polygon_head import box_to_image, initial_contour, superellipse_contour


@pytest.fixture
def cells(livecell_dir):
    """Two train images of different cell types, 40 cells each: (gray, boxes, true contours)."""
    coco = load_coco(livecell_dir / "train" / "annotations.json", livecell_dir / "train" / "images")
    index = coco.pycocotools()
    picked = {}
    for image in coco.images:
        picked.setdefault(image.file_name.split("_")[0], image)
    out = []
    for image in list(picked.values())[:2]:
        anns = [a for a in index.loadAnns(image.ann_ids) if a.get("segmentation")][:40]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32)
        truth = torch.tensor(np.stack([resample_polygon(a["segmentation"][0], 64) for a in anns]),
                             dtype=torch.float32)
        out.append((torch.from_numpy(normalize_image(read_image(image.path))), boxes, truth))
    return out


def _mean_losses(cells, config: LossConfig, contour: str) -> tuple[float, float]:
    local, glob = [], []
    for gray, boxes, truth in cells:
        n = len(boxes)
        if contour == "true":
            poly = truth
        elif contour == "star":  # shrunk while keeping its box: invisible to the unary term
            poly = box_to_image(superellipse_contour(64, 0.6)[None].repeat(n, 1, 1), boxes)
        else:
            poly = box_to_image(initial_contour(64, contour)[None].repeat(n, 1, 1), boxes)
        crops, inside = gt_box_crops(gray[None, None], torch.zeros(n, dtype=torch.long), boxes, config)
        frame = polygons_to_box_frame(poly, boxes, config.raster_size, config.raster_padding)
        logits = soft_rasterize_logits(frame, config.raster_size, config.inv_smoothness)
        local.append(float(local_pairwise_loss(logits, crops[:, 0], inside, config.local_kernel,
                                               config.local_dilation, config.local_similarity_scale,
                                               config.local_similarity_threshold)))
        glob.append(float(global_pairwise_loss(logits, crops[:, 1], config.global_normalize)))
    return float(np.mean(local)), float(np.mean(glob))


def test_pairwise_losses_rank_the_true_contour_below_ellipse_and_filled_box(cells):
    config = LossConfig()
    true_local, true_global = _mean_losses(cells, config, "true")
    ell_local, ell_global = _mean_losses(cells, config, "ellipse")
    box_local, box_global = _mean_losses(cells, config, "box")
    assert true_local < ell_local < box_local
    assert true_global < ell_global < box_global


def test_weighted_total_prefers_the_true_contour_to_a_shrunk_star(cells):
    # The local term alone prefers the star (it cuts through textured cell interiors for free); the default
    # gamma on the normalised Chan-Vese term must outweigh that, or training shrinks masks.
    config = LossConfig()
    true_local, true_global = _mean_losses(cells, config, "true")
    star_local, star_global = _mean_losses(cells, config, "star")
    assert star_local < true_local
    # unary is ~0.01 for the true contour (annotation vs box rounding) and 0 for the star: count it against truth
    total = config.local_weight * true_local + config.global_weight * true_global + 0.02
    assert total < config.local_weight * star_local + config.global_weight * star_global
    old = LossConfig(global_normalize=False, global_weight=0.03)  # an early weighting that shrank masks
    old_true, old_true_g = _mean_losses(cells, old, "true")
    old_star, old_star_g = _mean_losses(cells, old, "star")
    assert old.local_weight * old_star + old.global_weight * old_star_g < old.local_weight * old_true + old.global_weight * old_true_g


def test_chan_vese_on_raw_intensity_cannot_tell_cells_from_background(cells):
    # Why the default Chan-Vese channel is local contrast: phase-contrast cells have the background's mean
    # intensity, so on intensity the true contour is no better than the box (here it is slightly worse).
    config = LossConfig(global_channel="intensity")
    true_global = _mean_losses(cells, config, "true")[1]
    box_global = _mean_losses(cells, config, "box")[1]
    assert true_global >= box_global * 0.98
