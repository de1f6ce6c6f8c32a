"""Segment image files into a folder: the loop behind ``cellboxify predict`` (the CLI only parses and prints).

Each file is a 2-D image or a stack segmented plane by plane (as the panel's "all slices"); outputs are those of
the panel's *Export masks* (``export.write_label_outputs``: a label TIFF per file, a measurements CSV per plane),
plus ``predictions_coco.json`` (outlines with their scores) and ``boxes.json`` (detected boxes with scores, for
self-training). One plane larger than ``LARGE_SIDE``² is read, segmented and written window by window, so memory
follows the tile, not the image.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .data.images import TiffRegions, image_planes, open_image, read_pixel_size
from .export import (boxes_coco, plane_name, write_coco, write_label_outputs, write_prediction_csv,
                     write_prediction_tiff)
from .io_utils import atomic_write_text
from .predict import LARGE_SIDE, Predictor

FORMATS = ("tiff", "coco", "csv", "boxes")


@dataclass
class BatchResult:
    files: int
    planes: int
    cells: int
    calibrated: int  # files with a pixel size (read from the file, or given)


def earlier_outputs(out: Path, files: list[Path], formats: set[str]) -> list[Path]:
    """The files in ``out`` that segmenting ``files`` in ``formats`` would replace (a stack's CSVs included)."""
    if not out.is_dir():
        return []
    found = []
    for path in files:
        if "tiff" in formats:
            found.append(out / f"{path.stem}_labels.tif")
        if "csv" in formats:
            found += [out / f"{path.stem}_cells.csv", *out.glob(f"{glob.escape(path.stem)}_*_cells.csv")]
    found += [out / name for kind, name in (("coco", "predictions_coco.json"), ("boxes", "boxes.json"))
              if kind in formats]
    return [f for f in dict.fromkeys(found) if f.exists()]


def segment_files(predictor: Predictor, files: list[Path], out: Path, formats: set[str], tile: int | None = None,
                  overlap: int = 128, pixel_size: tuple[float, float] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Segment ``files`` with ``predictor`` into ``out`` in ``formats`` (a subset of ``FORMATS``).

    ``pixel_size`` (µm) overrides what each file says; ``progress(done, total)`` counts tiles (a plane segmented
    at once is one), the total growing as stacks and large planes are found.
    """
    out.mkdir(parents=True, exist_ok=True)
    coco_items, coco_scores, box_items, box_scores = [], [], [], []
    calibrated, cells = 0, 0
    units = {"done": 0, "total": len(files)}

    def plane_progress(done: int, total: int) -> None:
        units["plane"] = total
        if progress is not None:
            progress(units["done"] + done, units["total"] - 1 + total)

    for path in files:
        image = open_image(path)  # a large TIFF is read tile by tile
        size = pixel_size or read_pixel_size(path)
        calibrated += size is not None
        calibration = {"pixel_size": size, "unit": "um"} if size else {}
        planes = [((), image)] if isinstance(image, TiffRegions) else image_planes(image)
        units["total"] += len(planes) - 1
        stack = []
        for index, plane in planes:
            pred = predictor.segment(plane, tile=tile, overlap=overlap, progress=plane_progress)
            tiles = units.pop("plane", 1)
            units["total"] += tiles - 1
            units["done"] += tiles
            if len(planes) == 1 and pred.shape[0] * pred.shape[1] > LARGE_SIDE * LARGE_SIDE:
                # one large plane: written window by window, never as a whole label image
                if "csv" in formats:
                    write_prediction_csv(out / f"{plane_name(path.stem, index)}_cells.csv", pred, plane, **calibration)
                if "tiff" in formats:
                    write_prediction_tiff(out / f"{path.stem}_labels.tif", pred, size)
            else:
                stack.append(pred.labels())
            file_name = f"{plane_name(path.stem, index)}.tif" if index else path.name
            coco_items.append((file_name, pred))
            coco_scores.append(dict(zip(pred.label_ids().tolist(), pred.scores.tolist())))
            box_items.append((file_name, pred.shape, pred.boxes_xyxy))
            box_scores.append(pred.scores)
            cells += len(pred)
            if progress is not None:
                progress(units["done"], units["total"])
        if stack and {"csv", "tiff"} & formats:
            leading = image.shape[:len(planes[0][0])]  # () for one plane
            labels = np.stack(stack).reshape(leading + stack[0].shape)
            pixels = dict(planes)
            for _ in write_label_outputs(out, path.stem, labels, pixels.__getitem__, {"csv", "tiff"} & formats,
                                         calibration):
                pass
    # COCO from the predictions (outlines, with scores), not from label images kept per plane
    if "coco" in formats:
        write_coco(out / "predictions_coco.json", coco_items, coco_scores)
    if "boxes" in formats:
        atomic_write_text(out / "boxes.json", json.dumps(boxes_coco(box_items, box_scores)))
    return BatchResult(len(files), len(coco_items), cells, calibrated)
