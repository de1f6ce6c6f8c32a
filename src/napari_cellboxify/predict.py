"""The Predictor: a loaded model that answers "segment this image / these boxes / this stack / these tiles".

It knows nothing of napari. Images go in as numpy arrays (2-D, RGB(A), any dtype); results come out as a
``Prediction`` of polygons in image coordinates, boxes (XYXY), scores, and helpers for label images.
"""

from __future__ import annotations

import copy

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torchvision.ops import nms

from .config import CellBoxifyConfig
from .data.images import ImageReadError
from .data.transforms import TileNormaliser, normalize_image, to_model_input
from .device import pick_device
from .geometry import polygons_to_labels, polygons_to_masks
from .tta import TTA_VIEWS, outline_with_tta, segment_with_tta


# An image with a side over LARGE_SIDE px is worked on in parts (segment_boxes, fit_zoom, the panel's Segment
# image), so that memory follows the cells, not the image; MARGIN px of context surround each part.
LARGE_SIDE = 2048
MARGIN = 64


@dataclass
class Prediction:
    """Instances found in one 2-D image; all coordinates are (x, y) in that image's pixel frame."""

    polygons_xy: np.ndarray  # (N, V, 2) float32
    boxes_xyxy: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32, 1.0 for user-given boxes
    shape: tuple[int, int]  # (H, W) of the image
    ids: np.ndarray | None = None  # label of each instance (default 1..N)

    def __len__(self) -> int:
        return len(self.scores)

    def label_ids(self) -> np.ndarray:
        return np.arange(1, len(self) + 1) if self.ids is None else self.ids

    def labels(self) -> np.ndarray:
        """(H, W) label image (uint16, or uint32 past 65,535 cells); overlaps go to the higher score."""
        return polygons_to_labels(self.polygons_xy, self.shape, self.scores, self.label_ids())

    def masks(self) -> np.ndarray:
        return polygons_to_masks(self.polygons_xy, self.shape)

    def select(self, keep: np.ndarray) -> "Prediction":
        ids = None if self.ids is None else self.ids[keep]
        return Prediction(self.polygons_xy[keep], self.boxes_xyxy[keep], self.scores[keep], self.shape, ids)

    @staticmethod
    def empty(shape: tuple[int, int], num_vertices: int = 64) -> "Prediction":
        return Prediction(
            np.zeros((0, num_vertices, 2), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), shape
        )


class Predictor:
    """Holds a model on a device and segments images.

    Args:
        model: a ``CellBoxify`` (``checkpoint.load_model`` or ``Predictor.from_weights`` build one).
        score_threshold: detections below this score are dropped by ``segment_image``.
        max_detections: cap on instances per image (the model's ``detections_per_img`` by default).
    """

    def __init__(self, model, device: str | torch.device = "auto", score_threshold: float = 0.5,
                 max_detections: int | None = None):
        self.device = pick_device(device) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        # The predictor's own settings (zoom, test-time augmentation), passed to the model at each call: the model
        # itself is never changed, so threads and other predictors may share it.
        self.config: CellBoxifyConfig = copy.deepcopy(model.config)
        self.score_threshold = score_threshold
        self.max_detections = max_detections

    @property
    def tta(self) -> str:
        """Test-time augmentation, ``model.tta``: "off", "flips" or "flips+scales" (see tta.py)."""
        return self.config.model.tta

    @tta.setter
    def tta(self, value: str) -> None:
        if value not in TTA_VIEWS:
            raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_VIEWS)}, got {value!r}")
        self.config.model.tta = value

    @property
    def image_scale(self) -> float:
        """The zoom the network sees images at (``model.image_scale`` of this predictor's config); set it for
        another magnification."""
        return self.config.model.image_scale

    @image_scale.setter
    def image_scale(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"the zoom (image scale) must be > 0, got {value}")
        self.config.model.image_scale = float(value)

    def with_settings(self, **settings) -> "Predictor":
        """A predictor on the same model with other settings (``image_scale``, ``tta``, ``score_threshold``,
        ``max_detections``): what a worker thread takes, so that a later change of the panel's settings does not
        reach a run already going."""
        twin = copy.copy(self)
        twin.config = copy.deepcopy(self.config)
        for name, value in settings.items():
            if name not in ("image_scale", "tta", "score_threshold", "max_detections"):
                raise TypeError(f"not a predictor setting: {name}")
            setattr(twin, name, value)
        return twin

    @classmethod
    def from_weights(cls, path: str | Path | None = None, device: str = "auto", overrides: list[str] | None = None,
                     **kwargs) -> "Predictor":
        """Load ``path``: a file, a shipped name (``"cells"``, ``"nuclei"``), or the default (``cells``) when
        None; ``overrides`` change inference settings of the file's config (``["model.image_scale=0.5"]``)."""
        from .checkpoint import load_model
        from .weights import resolve_weights

        path = resolve_weights(path)
        model, _ = load_model(path, "cpu", overrides=overrides)
        return cls(model, device, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> torch.Tensor:
        d = self.config.data
        return to_model_input(normalize_image(image, d.clahe, d.clahe_clip_limit)).to(self.device)

    def segment(self, image, tile: int | None = None, overlap: int = 128,
                progress: Callable[[int, int], None] | None = None, **kwargs) -> Prediction:
        """Segment a whole 2-D image the way the panel, ``predict`` and ``evaluate`` all do: in tiles of ``tile``
        px when given, else in tiles of LARGE_SIDE / 2 for an image with a side over LARGE_SIDE, else at once.

        Without tiles a 4,096² image needs ~9 GB on a CPU (benchmarks/RESULTS.md, "Boxes on large images"), more
        than many laptops have, and a CPU has no out-of-memory error to fall back on. ``image`` may also be a
        memory map or a ``data.images.TiffRegions`` (``open_image``): a large one is read tile by tile.
        ``progress(done, total)`` counts tiles.
        """
        if tile is None and max(image.shape[:2]) > LARGE_SIDE:
            tile = LARGE_SIDE // 2
        if tile:
            return self.segment_tiled(image, tile=tile, overlap=overlap, progress=progress, **kwargs)
        pred = self.segment_image(np.asarray(image), **kwargs)
        if progress:
            progress(1, 1)
        return pred

    def segment_image(self, image: np.ndarray, score_threshold: float | None = None,
                      max_detections: int | None = None) -> Prediction:
        """Detect and segment every cell of a 2-D (or RGB) image; the best ``max_detections`` are kept.

        If the device runs out of memory, the image is segmented again in tiles (halving the tile size until it
        fits), so a large image on a small GPU still gets an answer.
        """
        d = self.config.data
        norm = normalize_image(image, d.clahe, d.clahe_clip_limit)
        try:
            pred = self._segment_normalised(norm, score_threshold)
        except torch.OutOfMemoryError:
            pred = self._tiles_after_oom(norm, score_threshold)
        limit = max_detections or self.max_detections
        if limit is not None and len(pred) > limit:
            pred = pred.select(np.argsort(-pred.scores, kind="stable")[:limit])
        return pred

    def _tiles_after_oom(self, norm: np.ndarray, score_threshold: float | None) -> Prediction:
        tile = max(norm.shape) // 2
        while tile >= 128:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            try:
                return self._tiled(_crops_of(norm), norm.shape, tile, min(128, tile // 4), score_threshold)
            except torch.OutOfMemoryError:
                tile //= 2
        raise MemoryError(f"out of {self.device.type} memory even with 128 px tiles: use a smaller image or the CPU")

    @torch.no_grad()
    def segment_boxes(self, image: np.ndarray, boxes_xyxy: np.ndarray, ids: np.ndarray | None = None,
                      window: int = LARGE_SIDE, margin: int = MARGIN) -> Prediction:
        """One polygon per given box (user-drawn or ground-truth boxes), in the order given.

        An image larger than ``window`` px on a side is outlined region by region: the boxes whose centres share
        a ``window / 2`` tile are outlined in a crop around them, ``margin`` px of context added, the contrast
        still normalised over the whole image. Time and memory then follow the boxes, not the image: 60 boxes on
        a 4096 x 4096 image take 19 s and 2.0 GB on 2 CPU cores, the whole image at once 55 s and 8.8 GB, and the
        outlines are as good (benchmarks/bench_boxes_large.py).
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        d = self.config.data
        shape = tuple(int(v) for v in image.shape[:2])
        if len(boxes) == 0:
            return Prediction.empty(shape, self.config.model.num_vertices)
        if max(shape) <= window:
            polys = self._outline_normalised(normalize_image(np.asarray(image), d.clahe, d.clahe_clip_limit), boxes)
            return Prediction(polys, boxes, np.ones(len(boxes), np.float32), shape, ids)
        # Contrast normalised over the whole image, or, past LARGE_SIDE² pixels, per region (TileNormaliser).
        if shape[0] * shape[1] > LARGE_SIDE * LARGE_SIDE:
            crops = TileNormaliser(image, d.clahe, d.clahe_clip_limit, tile=window // 2)
        else:
            crops = _crops_of(normalize_image(np.asarray(image), d.clahe, d.clahe_clip_limit))
        polys = np.zeros((len(boxes), self.config.model.num_vertices, 2), np.float32)
        h, w = shape
        tile = max(window // 2, 1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        cells = np.floor(centres / tile).astype(np.int64)
        for cell in np.unique(cells, axis=0):
            idx = np.flatnonzero((cells == cell).all(axis=1))
            x0, y0 = (int(max(0, np.floor(v) - margin)) for v in boxes[idx, :2].min(axis=0))
            x1 = int(min(w, np.ceil(boxes[idx, 2].max()) + margin))
            y1 = int(min(h, np.ceil(boxes[idx, 3].max()) + margin))
            offset = np.array([x0, y0], np.float32)
            polys[idx] = self._outline_normalised(crops(y0, y1, x0, x1), boxes[idx] - np.tile(offset, 2)) + offset
        return Prediction(polys, boxes, np.ones(len(boxes), np.float32), shape, ids)

    def _outline_normalised(self, norm: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        tensor = to_model_input(norm).to(self.device)
        box_tensor = torch.from_numpy(np.ascontiguousarray(boxes)).to(self.device)
        if self.tta != "off":
            return outline_with_tta(self.model, tensor, box_tensor, TTA_VIEWS[self.tta], scale=self.image_scale)
        return self.model.segment_boxes([tensor], [box_tensor], scale=self.image_scale)[0].float().cpu().numpy()

    def segment_stack(self, stack: np.ndarray, progress: Callable[[int, int], None] | None = None,
                      **kwargs) -> list[Prediction]:
        """Segment each plane of a (T/Z, H, W[, C]) stack independently."""
        results = []
        for i, plane in enumerate(stack):
            results.append(self.segment_image(plane, **kwargs))
            if progress:
                progress(i + 1, len(stack))
        return results

    def segment_tiled(self, image, tile: int = 1024, overlap: int = 128,
                      progress: Callable[[int, int], None] | None = None, **kwargs) -> Prediction:
        """Segment a large image tile by tile; instances are merged across tiles without duplicates.

        Each tile keeps only the instances whose box centre falls in its *core* (the tile minus half the
        overlap on sides shared with a neighbour), so a cell cut by one tile is taken from the tile that sees it
        whole; a final NMS removes what is left of duplicates. ``overlap`` should exceed the largest cell.

        An image of up to LARGE_SIDE² pixels is normalised whole, so that tiles share one contrast stretch; a
        larger one tile by tile (``TileNormaliser``: one stretch from a sample of the whole image, CLAHE per tile
        with context), so that memory follows the tile at any image size.
        """
        h, w = image.shape[:2]
        if h <= tile and w <= tile:
            pred = self.segment_image(np.asarray(image), **kwargs)
            if progress:
                progress(1, 1)
            return pred
        if overlap * 2 >= tile:
            raise ValueError(f"overlap ({overlap}) must be less than half the tile size ({tile})")
        d = self.config.data
        if h * w > LARGE_SIDE * LARGE_SIDE:
            crops = TileNormaliser(image, d.clahe, d.clahe_clip_limit, tile=tile)
        else:
            crops = _crops_of(normalize_image(np.asarray(image), d.clahe, d.clahe_clip_limit))
        return self._tiled(crops, (h, w), tile, overlap, kwargs.get("score_threshold"), progress)

    def _tiled(self, crops: Callable[[int, int, int, int], np.ndarray], shape: tuple[int, int], tile: int,
               overlap: int, score_threshold: float | None,
               progress: Callable[[int, int], None] | None = None) -> Prediction:
        """Segment the normalised tiles that ``crops(y0, y1, x0, x1)`` returns and merge them."""
        h, w = shape
        step = tile - overlap
        ys = _tile_starts(h, tile, step)
        xs = _tile_starts(w, tile, step)
        parts = []
        total, done = len(ys) * len(xs), 0
        for y0 in ys:
            for x0 in xs:
                crop = crops(y0, min(h, y0 + tile), x0, min(w, x0 + tile))
                pred = self._segment_normalised(crop, score_threshold)
                cy = (pred.boxes_xyxy[:, 1] + pred.boxes_xyxy[:, 3]) / 2 + y0
                cx = (pred.boxes_xyxy[:, 0] + pred.boxes_xyxy[:, 2]) / 2 + x0
                core_y0 = y0 + (overlap / 2 if y0 > 0 else 0)
                core_x0 = x0 + (overlap / 2 if x0 > 0 else 0)
                core_y1 = y0 + crop.shape[0] - (overlap / 2 if y0 + tile < h else 0)
                core_x1 = x0 + crop.shape[1] - (overlap / 2 if x0 + tile < w else 0)
                keep = (cy >= core_y0) & (cy < core_y1) & (cx >= core_x0) & (cx < core_x1)
                offset = np.array([x0, y0], np.float32)
                parts.append((pred.polygons_xy[keep] + offset, pred.boxes_xyxy[keep] + np.tile(offset, 2),
                              pred.scores[keep]))
                done += 1
                if progress:
                    progress(done, total)
        polys = np.concatenate([p[0] for p in parts])
        boxes = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts])
        merged = Prediction(polys, boxes, scores, (h, w))
        if len(merged):
            keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), self.config.model.box_nms_thresh).numpy()
            merged = merged.select(np.sort(keep))
        return merged

    @torch.no_grad()
    def _segment_normalised(self, norm: np.ndarray, score_threshold: float | None = None) -> Prediction:
        shape = tuple(norm.shape)
        if min(shape) < 8:  # too small to hold a cell at any scale the network sees
            return Prediction.empty(shape, self.config.model.num_vertices)
        if float(norm.max()) - float(norm.min()) < 1e-6:
            # No contrast, no cell: the network would still answer (4 "cells" at the corners of an all-zero
            # image, padding edges), and the empty part of a large mostly blank scan costs nothing this way.
            return Prediction.empty(shape, self.config.model.num_vertices)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        tensor = to_model_input(norm).to(self.device)
        if self.tta != "off":
            boxes, scores, polys = segment_with_tta(self.model, tensor, TTA_VIEWS[self.tta], threshold,
                                                    scale=self.image_scale)
            return Prediction(polys, boxes, scores, shape)
        # The Predictor rasterises polygons itself, only when asked: no full-size masks from the model here.
        out = self.model([tensor], scale=self.image_scale, paste=False)[0]
        keep = out["scores"] >= threshold
        return Prediction(out["polygons"][keep].float().cpu().numpy(), out["boxes"][keep].float().cpu().numpy(),
                          out["scores"][keep].float().cpu().numpy(), shape)


def _crops_of(norm: np.ndarray) -> Callable[[int, int, int, int], np.ndarray]:
    return lambda y0, y1, x0, x1: norm[y0:y1, x0:x1]


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # last tile flush with the edge
    return sorted(set(starts))


def iter_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into the image files they name (sorted), for ``cellboxify predict``.

    A path that does not exist is refused here, before any model is loaded or output folder made.
    """
    suffixes = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in suffixes and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise ImageReadError(f"image not found: {p}")
    return out
