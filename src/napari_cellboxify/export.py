"""Exports of a prediction: label TIFF, COCO (RLE through pycocotools), per-cell measurements CSV.

Every writer publishes atomically (temporary file + os.replace): an interrupted export leaves the previous
file intact, never a half-written one.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from .io_utils import atomic_write_text, atomic_write_with

MEASUREMENTS = ("label", "area", "perimeter", "centroid", "eccentricity", "intensity_mean")


def plane_name(stem: str, plane: tuple) -> str:
    """The name of one plane of a stack, as every export names it: ``NAME`` for a 2-D image, ``NAME_t`` or
    ``NAME_t_z`` for plane (t,) or (t, z)."""
    return stem + "".join(f"_{k}" for k in plane)


def write_label_tiff(path: str | Path, labels: np.ndarray, pixel_size: tuple[float, float] | None = None) -> Path:
    """Write a label image (uint16 if the ids fit, else uint32) as a compressed TIFF.

    With ``pixel_size`` (height, width in µm) the file carries it in the standard resolution tags (centimetres,
    which Fiji shows in µm and ``data.images.read_pixel_size`` reads back), so measurements made on the masks
    elsewhere are in µm too.
    """
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    calibration = {}
    if pixel_size is not None:
        sy, sx = (float(v) for v in pixel_size)
        calibration = {"resolution": (1e4 / sx, 1e4 / sy), "resolutionunit": "CENTIMETER"}
    atomic_write_with(path, lambda tmp: tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib",
                                                         **calibration), ".tif")
    return Path(path)


def labels_to_coco_annotations(labels: np.ndarray, image_id: int, start_id: int = 1,
                               scores: dict[int, float] | None = None) -> list[dict]:
    """One COCO annotation (RLE segmentation, bbox XYWH, area) per label of a label image."""
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    anns = []
    ids = np.unique(labels)
    ids = ids[ids != 0]
    slices = ndimage.find_objects(labels.astype(np.int64))
    for k, label in enumerate(ids):
        full = np.zeros(labels.shape, dtype=np.uint8, order="F")
        sl = slices[int(label) - 1]
        full[sl] = labels[sl] == label
        rle = mask_utils.encode(full)
        rle["counts"] = rle["counts"].decode("ascii")
        ann = {
            "id": start_id + k,
            "image_id": image_id,
            "category_id": 1,
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
            "label": int(label),
        }
        if scores is not None and int(label) in scores:
            ann["score"] = float(scores[int(label)])
        anns.append(ann)
    return anns


def write_coco(path: str | Path, images: Sequence[tuple[str, np.ndarray]], scores: Sequence[dict] | None = None) -> Path:
    """COCO file for ``[(file_name, label_image), ...]`` with RLE segmentations."""
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    next_id = 1
    for i, (name, labels) in enumerate(images, start=1):
        coco["images"].append({"id": i, "file_name": name, "height": int(labels.shape[0]), "width": int(labels.shape[1])})
        anns = labels_to_coco_annotations(labels, i, next_id, scores[i - 1] if scores else None)
        coco["annotations"] += anns
        next_id += len(anns)
    atomic_write_text(path, json.dumps(coco))
    return Path(path)


def measurements(labels: np.ndarray, intensity: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-cell measurements from skimage's regionprops_table (area, perimeter, centroid, eccentricity, mean)."""
    from skimage.measure import regionprops_table

    props = list(MEASUREMENTS)
    if intensity is None:
        props.remove("intensity_mean")
    elif intensity.ndim == 3:  # RGB: measure luminance
        from .data.transforms import to_gray

        intensity = to_gray(intensity)
    return regionprops_table(labels.astype(np.int64), intensity_image=intensity, properties=props)


def write_measurements_csv(path: str | Path, labels: np.ndarray, intensity: np.ndarray | None = None,
                           pixel_size: tuple[float, float] | None = None, origin: tuple[float, float] = (0.0, 0.0),
                           unit: str | None = None) -> Path:
    """One row per cell: label, area (pixels), perimeter, centroid (row/col pixel index), eccentricity, mean.

    With ``pixel_size`` (a pixel's height and width, e.g. µm: napari's layer scale) the same in physical units is
    added, named by ``unit`` (``area_um2``, ``centroid_y_um``; ``_world`` when the unit is unknown), centroids
    offset by ``origin`` (the layer's translate) so that they are the positions napari shows. The perimeter is
    scaled only for square pixels (on a stretched grid it is not a scaled copy of the pixel perimeter).
    """
    table = measurements(labels, intensity)
    table["area"] = np.asarray(table["area"]).astype(np.int64)  # a pixel count
    if pixel_size is not None:
        (sy, sx), (oy, ox) = (float(v) for v in pixel_size), (float(v) for v in origin)
        suffix = unit or "world"
        table[f"area_{suffix}{'2' if unit else ''}"] = table["area"] * sy * sx
        if np.isclose(sy, sx):
            table[f"perimeter_{suffix}"] = np.asarray(table["perimeter"]) * sy
        table[f"centroid_y_{suffix}"] = oy + np.asarray(table["centroid-0"]) * sy
        table[f"centroid_x_{suffix}"] = ox + np.asarray(table["centroid-1"]) * sx
    names = {"centroid-0": "centroid_y", "centroid-1": "centroid_x", "intensity_mean": "mean_intensity"}
    columns = list(table)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([names.get(c, c) for c in columns])
    for row in zip(*(table[c] for c in columns)):
        writer.writerow([int(v) if isinstance(v, (np.integer,)) else (f"{v:.4f}" if isinstance(v, float | np.floating) else v) for v in row])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def boxes_coco(items: Sequence[tuple[str, tuple[int, int], np.ndarray]],
               scores: Sequence[np.ndarray] | None = None) -> dict:
    """COCO dict with boxes only: ``[(file_name, (H, W), boxes_xyxy (N, 4)), ...]``.

    With ``scores`` (one array per image) each annotation carries its detection ``score``: predicted boxes to
    review in napari, or pseudo-labels for training on unlabeled images (``data.pseudo_*`` in the config).
    """
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    for i, (name, (h, w), boxes) in enumerate(items, start=1):
        coco["images"].append({"id": i, "file_name": name, "height": int(h), "width": int(w)})
        image_scores = None if scores is None else np.asarray(scores[i - 1], dtype=float).reshape(-1)
        for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
            ann = {
                "id": len(coco["annotations"]) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
            }
            if image_scores is not None:
                ann["score"] = float(image_scores[k])
            coco["annotations"].append(ann)
    return coco


def write_training_project(folder: str | Path, items: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    """Write images (TIFF) and their boxes (COCO, boxes only) for fine-tuning: ``[(name, image, boxes), ...]``.

    Returns (annotation file, image folder). Images are written before the annotation file, each atomically,
    so the annotation file never names an image that is not complete.
    """
    folder = Path(folder)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    listed = []
    for name, image, boxes in items:
        file_name = f"{name}.tif"
        atomic_write_with(images_dir / file_name, lambda tmp, im=image: tifffile.imwrite(tmp, im), ".tif")
        listed.append((file_name, np.asarray(image).shape[:2], boxes))
    path = folder / "annotations.json"
    atomic_write_text(path, json.dumps(boxes_coco(listed)))
    return path, images_dir
