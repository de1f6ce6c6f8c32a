"""Do the box-only losses prefer the true cell contour?  Measured on real images, without a network.

Part 1 (ranking, seconds): each loss term and their weighted total at fixed contours inside every GT box: the true polygon
(LIVECell's annotation, resampled to 64 vertices), the inscribed ellipse and the filled box. A loss that a
network can learn masks from must rank the true contour lowest; on LIVECell, 2026-11-25's local term ranked the
filled box lowest and the intensity Chan-Vese term was flat.
Part 2 (``--fit``, minutes): smooth contours (ellipse + 8 Fourier harmonics per box) fitted by Adam to each
variant's total loss; their mean mask IoU against the GT masks.

    python benchmarks/bench_loss_fit.py [--data livecell|dsb2018|sartorius] [--images 5] [--cells 60] [--fit --iters 150]

Runs on training images (tuning data, never val): livecell-mini/train, or with ``--data dsb2018`` the
fluorescence images of dsb2018/train (whose masks are RLE: the true contour is the mask's outline), or with
``--data sartorius`` the overlay-decoded neuronal-culture images of sartorius-2021/reconstructed (what `neurons`
trains on; its three exact-label images, where Sartorius figures are reported, are left out). Writes a table
into benchmarks/RESULTS.md, one section per data set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from napari_cellboxify.config import LossConfig
from napari_cellboxify.data.coco import load_coco
from napari_cellboxify.data.images import read_image
from napari_cellboxify.data.transforms import normalize_image
from napari_cellboxify.geometry import (box_inscribed_ellipse, mask_iou, mask_outline, polygon_to_mask,
                                        resample_polygon)
from napari_cellboxify.losses import global_pairwise_loss, local_pairwise_loss, soft_rasterize_logits, unary_loss
from napari_cellboxify.losses.crops import gt_box_crops
from napari_cellboxify.losses.rasterize import polygons_to_box_frame
from napari_cellboxify.model.polygon_head import box_to_image, initial_contour, superellipse_contour

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402
from _scored_sets import SARTORIUS_EXACT  # noqa: E402

HARMONICS = 8
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# --data: (folder, what the table says, RESULTS.md section)
DATASETS = {
    "livecell": (SHARED / "livecell-mini" / "train", "livecell-mini/train images", "Loss ranking and fit on real cells"),
    "dsb2018": (SHARED / "dsb2018" / "train", "dsb2018/train fluorescence images",
                "Loss ranking and fit on fluorescence nuclei"),
    "sartorius": (SHARED / "sartorius-2021" / "reconstructed", "overlay-decoded sartorius-2021/reconstructed images",
                  "Loss ranking and fit on neuronal cultures"),
}

# Each variant changes LossConfig fields.
VARIANTS: dict[str, dict] = {
    "default": {},
    "unary only": {"local_weight": 0.0, "global_weight": 0.0},
    "no global": {"global_weight": 0.0},
    "no local": {"local_weight": 0.0},
    "raw Chan-Vese gamma 0.03 (2026-11-25)": {"global_normalize": False, "global_weight": 0.03},
    "global on intensity": {"global_channel": "intensity"},
    "gamma 0.3": {"global_weight": 0.3},
    "gamma 3": {"global_weight": 3.0},
    "local threshold 0.3 (BoxInst)": {"local_similarity_threshold": 0.3},
    "local x2": {"local_weight": 1.0},
    "smoother raster (tau 0.5)": {"inv_smoothness": 0.5},
}


def fit(gray: torch.Tensor, boxes: torch.Tensor, cfg: LossConfig, iters: int, lr: float) -> torch.Tensor:
    """Optimise free box-normalised vertices (N, V, 2) for the boxes; returns image-frame polygons."""
    n = boxes.shape[0]
    # Smooth contours, as a network's are: the ellipse plus a few Fourier harmonics per box. Free vertices
    # tangle under the narrow gradient band of the rasteriser, which says nothing about the losses.
    start = initial_contour(64)[None].repeat(n, 1, 1)
    theta = torch.arange(64) * (2 * torch.pi / 64)
    k = torch.arange(1, HARMONICS + 1)[:, None]
    basis = torch.cat([torch.cos(k * theta), torch.sin(k * theta)])  # (2K, V)
    coeffs = torch.zeros(n, 2 * HARMONICS, 2, requires_grad=True)
    size, pad = cfg.raster_size, cfg.raster_padding
    crops, inside = gt_box_crops(gray[None, None], torch.zeros(n, dtype=torch.long), boxes, cfg)
    local_crops, global_crops = crops[:, 0], crops[:, 1]
    opt = torch.optim.Adam([coeffs], lr=lr)

    def vertices():
        return start + torch.einsum("nkc,kv->nvc", coeffs, basis)

    for _ in range(iters):
        poly = box_to_image(vertices(), boxes)
        logits = soft_rasterize_logits(polygons_to_box_frame(poly, boxes, size, pad), size, cfg.inv_smoothness)
        loss = cfg.unary_weight * unary_loss(poly, boxes)
        if cfg.local_weight:
            loss = loss + cfg.local_weight * local_pairwise_loss(
                logits, local_crops, inside, cfg.local_kernel, cfg.local_dilation, cfg.local_similarity_scale,
                cfg.local_similarity_threshold)
        if cfg.global_weight:
            loss = loss + cfg.global_weight * global_pairwise_loss(logits, global_crops, cfg.global_normalize)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return box_to_image(vertices().detach(), boxes)


# "ellipse x0.8" (the ellipse shrunk about its centre) and "star" (a concave superellipse touching the four box
# edges, fill ~0.4) probe the failure seen in training: contours that shrink while keeping their box.
CONTOURS = ("true contour", "ellipse", "filled box", "ellipse x0.8", "star")


def contour_losses(gray: torch.Tensor, boxes: torch.Tensor, polygons: torch.Tensor, cfg: LossConfig) -> dict:
    """Each loss term (mean over the boxes) for image-frame polygons (N, V, 2) in their GT boxes."""
    crops, inside = gt_box_crops(gray[None, None], torch.zeros(len(boxes), dtype=torch.long), boxes, cfg)
    logits = soft_rasterize_logits(polygons_to_box_frame(polygons, boxes, cfg.raster_size, cfg.raster_padding),
                                   cfg.raster_size, cfg.inv_smoothness)
    return {
        "unary": float(unary_loss(polygons, boxes)),
        "local": float(local_pairwise_loss(logits, crops[:, 0], inside, cfg.local_kernel, cfg.local_dilation,
                                           cfg.local_similarity_scale, cfg.local_similarity_threshold)),
        "global": float(global_pairwise_loss(logits, crops[:, 1], cfg.global_normalize)),
    }


def rank_contours(images, cfg: LossConfig) -> dict[str, dict[str, float]]:
    """{term: {contour: mean loss over images}} for each contour in CONTOURS."""
    sums: dict[str, dict[str, list]] = {}
    for _, pixels, boxes, _, contours in images:
        gray = torch.from_numpy(normalize_image(pixels))
        b = torch.from_numpy(boxes)
        shapes = {
            "true contour": torch.from_numpy(contours),
            "ellipse": box_to_image(initial_contour(64)[None].repeat(len(b), 1, 1), b),
            "filled box": box_to_image(initial_contour(64, "box")[None].repeat(len(b), 1, 1), b),
            "ellipse x0.8": box_to_image((initial_contour(64)[None].repeat(len(b), 1, 1) - 0.5) * 0.8 + 0.5, b),
            "star": box_to_image(superellipse_contour(64, 0.6)[None].repeat(len(b), 1, 1), b),
        }
        for contour, poly in shapes.items():
            for term, value in contour_losses(gray, b, poly, cfg).items():
                sums.setdefault(term, {}).setdefault(contour, []).append(value)
    table = {term: {c: float(np.mean(v)) for c, v in by.items()} for term, by in sums.items()}
    # The weighted sum is what training minimises: the true contour must win there, not only per term.
    table["total"] = {c: cfg.unary_weight * table["unary"][c] + cfg.local_weight * table["local"][c]
                      + cfg.global_weight * table["global"][c] for c in table["unary"]}
    return table


def load_images(data: Path, count: int, max_cells: int):
    coco = load_coco(data / "annotations.json", data / "images")
    index = coco.pycocotools()
    modality = {im["id"]: im.get("modality") for im in coco.data["images"]}
    # Skip the partly annotated MCF7 image: its missing cells are not a property of the losses. DSB2018: its
    # fluorescence images only. Sartorius: not the exact-label images figures are reported on.
    entries = [im for im in coco.images if "MCF7_Phase_H4_1_03d08h00m_4" not in im.file_name
               and modality.get(im.id) in (None, "fluorescence_grayscale")
               and not im.file_name.startswith(SARTORIUS_EXACT)]
    # One image per cell type first, so a small count still covers several looks of phase contrast.
    by_type: dict[str, list] = {}
    for im in entries:
        by_type.setdefault(im.file_name.split("_")[0], []).append(im)
    ordered = [ims[k] for k in range(max(map(len, by_type.values()))) for ims in by_type.values() if k < len(ims)]
    out = []
    for im in ordered[:count]:
        anns = [a for a in index.loadAnns(im.ann_ids) if a.get("segmentation")]
        if len(anns) > max_cells:  # a fixed random subset keeps the fit fast; same subset for every variant
            anns = [anns[k] for k in sorted(np.random.default_rng(0).choice(len(anns), max_cells, replace=False))]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32)
        truths = [index.annToMask(a).astype(bool) for a in anns]
        contours = np.stack([resample_polygon(a["segmentation"][0], 64) if isinstance(a["segmentation"], list)
                             else mask_outline(t, 64) for a, t in zip(anns, truths)]).astype(np.float32)
        out.append((im.file_name, read_image(im.path), boxes, truths, contours))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=list(DATASETS), default="livecell")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--cells", type=int, default=60, help="cells sampled per image")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--variants", default="default,raw Chan-Vese gamma 0.03 (2026-11-25),gamma 0.3,no global", help="comma-separated names from VARIANTS")
    parser.add_argument("--fit", action="store_true", help="also fit contours to each variant (minutes)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    data, what, section = DATASETS[args.data]
    if not data.is_dir():
        print(f"skipped: {data} not found (see ../shared/data/README.md)")
        return 0
    torch.manual_seed(0)
    images = load_images(data, args.images, args.cells)
    n_cells = sum(len(b) for _, _, b, _, _ in images)
    lines = [f"{n_cells} cells (up to {args.cells} per image) on {len(images)} {what}.", ""]
    lines += ["Mean loss at fixed contours (lower = preferred; the true contour should be lowest, above all in the total):", "",
              "| loss variant | term | " + " | ".join(CONTOURS) + " |", "|---|---|" + "---|" * len(CONTOURS)]
    for name in args.variants.split(","):
        table = rank_contours(images, dataclasses.replace(LossConfig(), **VARIANTS[name]))
        for term, values in table.items():
            lines.append(f"| {name} | {term} | " + " | ".join(f"{values[c]:.4f}" for c in CONTOURS) + " |")
    if args.fit:
        ellipse = np.mean([mask_iou(polygon_to_mask(box_inscribed_ellipse(b), t.shape), t)
                           for _, _, bs, ts, _ in images for b, t in zip(bs, ts)])
        lines += ["", f"Smooth contours fitted to each variant's total loss, {args.iters} Adam steps (lr {args.lr}):",
                  "", "| loss variant | mean mask IoU vs GT |", "|---|---|",
                  f"| inscribed ellipse (start) | {ellipse:.3f} |"]
        for name in args.variants.split(","):
            cfg = dataclasses.replace(LossConfig(), **VARIANTS[name])
            ious = []
            for _, pixels, boxes, truths, _ in images:
                gray = torch.from_numpy(normalize_image(pixels))
                polys = fit(gray, torch.from_numpy(boxes), cfg, args.iters, args.lr).numpy()
                ious += [mask_iou(polygon_to_mask(p, t.shape), t) for p, t in zip(polys, truths)]
            lines.append(f"| {name} | {np.mean(ious):.3f} |")
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section(section, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
