"""Reader (COCO JSON -> image, boxes, masks) and writers (Labels -> TIFF/COCO, Shapes -> COCO boxes).

Readers return layer data tuples and writers return paths; neither touches the viewer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.coco import CocoError, load_coco
from ..data.images import read_image
from ..export import boxes_coco, plane_name, write_coco, write_label_tiff
from ..io_utils import atomic_write_text
from ..shapes import boxes_to_rectangles, shapes_to_boxes

BOX_STYLE = {"edge_color": "#00ff88", "face_color": "transparent", "edge_width": 1.5}


def get_reader(path):
    """npe2 reader hook: a callable for COCO JSON files, None for anything else (napari tries other readers)."""
    if isinstance(path, list):
        path = path[0]
    if not str(path).lower().endswith(".json"):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            head = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(head, dict) or "images" not in head or "annotations" not in head:
        return None
    return read_coco_layers


def coco_image_folder(json_path: Path) -> Path:
    """COCO files usually sit beside an ``images/`` folder; otherwise images are beside the file."""
    images = json_path.parent / "images"
    return images if images.is_dir() else json_path.parent


def read_coco_layers(path) -> list[tuple]:
    path = Path(path[0] if isinstance(path, list) else path)
    coco = load_coco(path, coco_image_folder(path))
    gt = coco.pycocotools()
    layers = []
    for image in coco.images:
        pixels = read_image(image.path)
        stem = Path(image.file_name).stem
        layers.append((pixels, {"name": stem}, "image"))
        rects = boxes_to_rectangles(image.boxes_xyxy)
        layers.append((rects, {"name": f"{stem} boxes", "shape_type": "rectangle", **BOX_STYLE}, "shapes"))
        anns = [a for a in gt.loadAnns(image.ann_ids) if a.get("segmentation")]
        if anns:
            h, w = pixels.shape[:2]
            labels = np.zeros((h, w), dtype=np.uint16 if len(anns) < 2**16 else np.uint32)
            for k, ann in enumerate(anns, start=1):
                mask = gt.annToMask(ann).astype(bool)
                if mask.shape != labels.shape:
                    raise CocoError(f"{path}: masks of {image.file_name} are {mask.shape}, the image is {labels.shape}")
                labels[mask] = k
            layers.append((labels, {"name": f"{stem} masks"}, "labels"))
    return layers


def write_labels_tiff(path: str, data, attributes: dict) -> list[str]:
    return [str(write_label_tiff(path, np.asarray(data)))]


def write_labels_coco(path: str, data, attributes: dict) -> list[str]:
    labels = np.asarray(data)
    name = attributes.get("name", "image")
    # A stack: one COCO image per plane, named as every other export names it (NAME_t, NAME_t_z), so that the
    # masks and the boxes (write_shapes_coco) of one stack name the same images.
    items = [(f"{plane_name(name, plane)}.tif", labels[plane] if plane else labels)
             for plane in np.ndindex(*labels.shape[:-2])]
    return [str(write_coco(path, items))]


def write_shapes_coco(path: str, data, attributes: dict) -> list[str]:
    """Shapes -> COCO boxes. Without the image, its extent is that of the shapes (nothing is clipped)."""
    shape_types = attributes.get("shape_type") or ["rectangle"] * len(data)
    if not data:
        raise ValueError("the Shapes layer is empty: no boxes to write")
    ndim = np.asarray(data[0]).shape[1]
    extent = np.max([np.max(np.asarray(d), axis=0) for d in data], axis=0)
    image_shape = tuple(int(np.ceil(v)) + 1 for v in extent[:ndim])
    converted = shapes_to_boxes(list(data), list(shape_types), image_shape)
    name = attributes.get("name", "image")
    items = [(f"{plane_name(name, plane)}.tif", image_shape[-2:], boxes)
             for plane, boxes in sorted(converted.boxes.items())]
    atomic_write_text(path, json.dumps(boxes_coco(items)))
    return [str(path)]
