"""Exports of a prediction: label TIFF, COCO (RLE through pycocotools), per-cell measurements CSV.

Every writer publishes atomically (temporary file + os.replace): an interrupted export leaves the previous
file intact, never a half-written one.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, TYPE_CHECKING, Sequence

import numpy as np
import tifffile

from .io_utils import atomic_write_text, atomic_write_with

if TYPE_CHECKING:
    from .predict import Prediction

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
    atomic_write_with(path, lambda tmp: tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib",
                                                         **_calibration(pixel_size)), ".tif")
    return Path(path)


def _calibration(pixel_size: tuple[float, float] | None) -> dict:
    """tifffile's resolution arguments for a pixel size (height, width) in µm: centimetres, as Fiji reads them."""
    if pixel_size is None:
        return {}
    sy, sx = (float(v) for v in pixel_size)
    return {"resolution": (1e4 / sx, 1e4 / sy), "resolutionunit": "CENTIMETER"}


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
        sl = slices[int(label) - 1]
        rle = window_rle(labels[sl] == label, sl[0].start, sl[1].start, labels.shape)
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


def window_rle(mask: np.ndarray, y0: int, x0: int, shape: tuple[int, int]) -> dict:
    """The compressed COCO RLE of an image of ``shape`` that is zero except for ``mask`` at ``(y0, x0)``, made
    from the window alone: a full-size mask per cell would cost the image's size for every cell."""
    from pycocotools import mask as mask_utils

    h, w = int(shape[0]), int(shape[1])
    window = np.zeros((mask.shape[0] + 2, mask.shape[1]), np.int8)  # a zero row above and below each column
    window[1:-1] = mask.astype(bool)
    change = np.diff(window, axis=0)  # +1: a run starts at that row of the column, -1: it ends there
    rows, cols = np.nonzero(change.T)  # column by column: COCO's RLE runs down the columns (Fortran order)
    sign = change.T[rows, cols]
    flat = (x0 + rows).astype(np.int64) * h + y0 + cols  # index in the column-major full image
    starts, ends = flat[sign > 0], flat[sign < 0]
    # a run ending at the bottom of one column and starting at the top of the next is one run
    joined = np.isin(starts[1:], ends[:-1])
    starts = np.concatenate([starts[:1], starts[1:][~joined]])
    ends = np.concatenate([ends[:-1][~joined], ends[-1:]])
    bounds = np.stack([starts, ends], axis=1).reshape(-1)
    counts = np.diff(np.concatenate([[0], bounds, [h * w]])).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # pycocotools ends with the last run, not an empty one after it
        counts.pop()
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_coco(path: str | Path, images: Sequence[tuple[str, "np.ndarray | Prediction"]],
               scores: Sequence[dict] | None = None) -> Path:
    """COCO file for ``[(file_name, label_image or Prediction), ...]`` with RLE segmentations (a Prediction is
    read window by window, as its label image would be, without making it)."""
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    next_id = 1
    for i, (name, labels) in enumerate(images, start=1):
        coco["images"].append({"id": i, "file_name": name, "height": int(labels.shape[0]), "width": int(labels.shape[1])})
        convert = labels_to_coco_annotations if isinstance(labels, np.ndarray) else prediction_coco_annotations
        anns = convert(labels, i, next_id, scores[i - 1] if scores else None)
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
    return _write_table_csv(path, measurements(labels, intensity), pixel_size, origin, unit)


def write_prediction_csv(path: str | Path, pred: "Prediction", intensity=None,
                         pixel_size: tuple[float, float] | None = None, unit: str | None = None) -> Path:
    """``write_measurements_csv`` of ``pred.labels()``, measured window by window without making that image
    (``intensity`` may be a memory map or a ``TiffRegions``): the same rows for an image of any size."""
    return _write_table_csv(path, prediction_measurements(pred, intensity), pixel_size, (0.0, 0.0), unit)


def _write_table_csv(path, table: dict, pixel_size, origin, unit) -> Path:
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


# A Prediction is written window by window: the cells whose box centre lies in one WINDOW² tile, painted (with
# every neighbour that reaches in, so that overlaps go where the label image puts them) in the rectangle around
# them. Memory follows the window, not the image.
WINDOW = 1024


def cell_windows(pred: "Prediction", window: int = WINDOW):
    """Yield ``(y0, x0, labels)``: ``labels`` is the rectangle at ``(y0, x0)`` around the cells whose box centre
    lies in one tile, holding exactly those cells' pixels as ``pred.labels()`` holds them (0 elsewhere)."""
    from .geometry import polygons_to_labels

    if not len(pred):
        return
    h, w = pred.shape
    polys = pred.polygons_xy.astype(np.float64)  # window offsets subtract exactly: the same pixels as the image's
    lo, hi = polys.min(axis=1), polys.max(axis=1)  # (N, 2) x, y extents of each outline
    ids, scores = pred.label_ids(), pred.scores
    centres = (pred.boxes_xyxy[:, :2] + pred.boxes_xyxy[:, 2:]) / 2
    cells = np.floor(centres / window).astype(np.int64)
    for cell in np.unique(cells, axis=0):
        group = np.flatnonzero((cells == cell).all(axis=1))
        x0, y0 = (int(max(0, np.floor(v))) for v in lo[group].min(axis=0))
        x1, y1 = int(min(w, np.ceil(hi[group, 0].max()) + 1)), int(min(h, np.ceil(hi[group, 1].max()) + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        near = np.flatnonzero((lo[:, 0] < x1) & (hi[:, 0] > x0) & (lo[:, 1] < y1) & (hi[:, 1] > y0))
        labels = polygons_to_labels(polys[near] - np.array([x0, y0]), (y1 - y0, x1 - x0), scores[near], ids[near])
        labels[~np.isin(labels, ids[group])] = 0
        yield y0, x0, labels


def prediction_measurements(pred: "Prediction", intensity=None, window: int = WINDOW) -> dict[str, np.ndarray]:
    """``measurements(pred.labels(), intensity)``, window by window (rows in label order)."""
    from .data.transforms import read_region

    tables = []
    for y0, x0, labels in cell_windows(pred, window):
        part = None if intensity is None else read_region(intensity, y0, y0 + labels.shape[0], x0,
                                                          x0 + labels.shape[1])
        table = measurements(labels, part)
        table["centroid-0"] = np.asarray(table["centroid-0"]) + y0
        table["centroid-1"] = np.asarray(table["centroid-1"]) + x0
        tables.append(table)
    if not tables:
        empty = np.zeros((1, 1), np.int64)
        return measurements(empty, None if intensity is None else np.zeros((1, 1)))
    table = {key: np.concatenate([np.asarray(t[key]) for t in tables]) for key in tables[0]}
    order = np.argsort(table["label"], kind="stable")
    return {key: values[order] for key, values in table.items()}


def prediction_coco_annotations(pred: "Prediction", image_id: int, start_id: int = 1,
                                scores: dict[int, float] | None = None, window: int = WINDOW) -> list[dict]:
    """``labels_to_coco_annotations(pred.labels(), ...)``, window by window."""
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    found = []
    for y0, x0, labels in cell_windows(pred, window):
        for label, sl in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
            if sl is not None:
                found.append((label, window_rle(labels[sl] == label, y0 + sl[0].start, x0 + sl[1].start, pred.shape)))
    anns = []
    for k, (label, rle) in enumerate(sorted(found, key=lambda item: item[0])):
        ann = {"id": start_id + k, "image_id": image_id, "category_id": 1, "segmentation": rle,
               "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
               "iscrowd": 0, "label": int(label)}
        if scores is not None and int(label) in scores:
            ann["score"] = float(scores[int(label)])
        anns.append(ann)
    return anns


def write_prediction_tiff(path: str | Path, pred: "Prediction", pixel_size: tuple[float, float] | None = None,
                          tile: int = 512) -> Path:
    """``write_label_tiff(path, pred.labels(), pixel_size)`` without making that image: a tiled TIFF painted and
    compressed tile by tile (what a 20,000² label image needs: 0.8-1.6 GB otherwise)."""
    from .geometry import polygons_to_labels

    h, w = pred.shape
    ids = pred.label_ids()
    dtype = np.uint16 if ids.max(initial=0) < 2**16 else np.uint32
    polys = pred.polygons_xy.astype(np.float64)
    lo, hi = (polys.min(axis=1), polys.max(axis=1)) if len(pred) else (np.zeros((0, 2)), np.zeros((0, 2)))

    def tiles():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                out = np.zeros((tile, tile), dtype)
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                near = np.flatnonzero((lo[:, 0] < x1) & (hi[:, 0] > x0) & (lo[:, 1] < y1) & (hi[:, 1] > y0))
                if len(near):
                    out[:y1 - y0, :x1 - x0] = polygons_to_labels(polys[near] - np.array([x0, y0]), (y1 - y0, x1 - x0),
                                                                 pred.scores[near], ids[near])
                yield out

    atomic_write_with(path, lambda tmp: tifffile.imwrite(tmp, tiles(), shape=(h, w), dtype=dtype, tile=(tile, tile),
                                                         compression="zlib", **_calibration(pixel_size)), ".tif")
    return Path(path)


def write_label_outputs(folder: str | Path, stem: str, labels: np.ndarray, plane_image: Callable[[tuple], np.ndarray],
                        formats: set[str], calibration: dict | None = None):
    """Write the masks of one image (a 2-D label image, or a stack's (T, [Z,] H, W)) as the panel's *Export masks*
    and ``cellboxify predict`` both do: ``"csv"``, a measurements table per plane (``{plane name}_cells.csv``,
    intensities from ``plane_image(plane)``); ``"tiff"``, one label TIFF of the whole stack (``{stem}_labels.tif``,
    carrying the pixel size when the calibration's unit converts to µm); ``"coco"``, the masks as COCO RLE
    (``{stem}_coco.json``).

    ``calibration``: ``{"pixel_size": (h, w), "origin": (y, x), "unit": "um"}`` or empty (pixels). A generator:
    yields each plane as it is written (for progress bars) and returns the paths written; every file is written
    atomically.
    """
    from .data.images import MICROMETRES_PER

    folder, calibration = Path(folder), dict(calibration or {})
    folder.mkdir(parents=True, exist_ok=True)
    planes = [tuple(i) for i in np.ndindex(*labels.shape[:-2])] if labels.ndim > 2 else [()]
    written, coco_items = [], []
    for plane in planes:
        name = plane_name(stem, plane)
        plane_labels = labels[plane] if plane else labels
        coco_items.append((f"{name}.tif", plane_labels))
        if "csv" in formats:
            written.append(write_measurements_csv(folder / f"{name}_cells.csv", plane_labels, plane_image(plane),
                                                  **calibration))
        yield plane
    if "tiff" in formats:
        to_um = MICROMETRES_PER.get(calibration.get("unit") or "")
        pixel_size = tuple(v * to_um for v in calibration["pixel_size"]) if to_um else None
        written.append(write_label_tiff(folder / f"{stem}_labels.tif", labels, pixel_size))
    if "coco" in formats:
        written.append(write_coco(folder / f"{stem}_coco.json", coco_items))
    return written


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
