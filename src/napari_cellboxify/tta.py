"""Test-time augmentation: segment flipped, transposed and zoomed copies of an image and merge the answers.

A cell looks the same flipped or turned, so a model's answers on the 8 flips/transposes of an image (and at a
slightly different zoom) disagree only where it is unsure. Merging them:

- **boxes** by weighted box fusion (Solovyev et al., 2021): boxes from different views that overlap (IoU >= 0.55)
  are one cell; its box is the score-weighted mean of theirs and its score the sum of theirs over the number of
  views, so a cell every view finds keeps its score and debris one view finds drops out of the ranking;
- **outlines** by averaging masks: each fused box is outlined in each unzoomed view from that view's features,
  the masks are averaged and the 0.5 contour of the average is the cell's polygon.

On livecell-mini/val with the default weights, "flips+scales" lifted segm AP 19.2 -> 20.6 and bbox AP 18.4 ->
20.8 (benchmarks/bench_tta.py, which also gives the cost: about 15x the time of one pass on a CPU, 2.5x on a
GPU, where the outlines are averaged on the device).
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import mask_outline, resample_polygon
from .model.paste import fill_windows, window_chunks

# A view is (k, zoom): k's bit 0 flips left-right, bit 1 flips up-down, bit 2 then transposes (8 = the dihedral
# group of the square); zoom multiplies the model's image scale. One entry per config.TTA_MODES setting.
FLIPS = tuple((k, 1.0) for k in range(8))
TTA_VIEWS = {
    "off": ((0, 1.0),),
    "flips": FLIPS,
    # Zoomed views only with the 4 flips: they add other box sizes, the transposes added little more on train.
    "flips+scales": FLIPS + tuple((k, z) for z in (0.8, 1.25) for k in range(4)),
}
FUSION_IOU = 0.55  # WBF's default; 0.5 and 0.7 scored the same on livecell-mini/train


def view_tensor(image: torch.Tensor, k: int) -> torch.Tensor:
    """(C, H, W) image as view ``k`` sees it."""
    if k & 1:
        image = image.flip(-1)
    if k & 2:
        image = image.flip(-2)
    if k & 4:
        image = image.transpose(-1, -2)
    return image


def boxes_to_view(boxes: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor:
    """XYXY boxes in the image (``shape`` = (H, W)) -> the same boxes in view ``k``."""
    h, w = shape
    b = boxes.clone()
    if k & 1:
        b[:, [0, 2]] = w - boxes[:, [2, 0]]
    if k & 2:
        b[:, [1, 3]] = h - b[:, [3, 1]]
    if k & 4:
        b = b[:, [1, 0, 3, 2]]
    return b


def boxes_from_view(boxes: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor:
    """XYXY boxes found in view ``k`` -> the image's frame (``shape`` = the image's (H, W))."""
    h, w = shape
    b = boxes[:, [1, 0, 3, 2]] if k & 4 else boxes.clone()
    if k & 2:
        b[:, [1, 3]] = h - b[:, [3, 1]]
    if k & 1:
        b[:, [0, 2]] = w - b[:, [2, 0]]
    return b


def points_from_view(points: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor:
    """(..., 2) (x, y) points in view ``k`` -> the image's frame."""
    h, w = shape
    p = points.flip(-1) if k & 4 else points.clone()
    if k & 2:
        p[..., 1] = h - p[..., 1]
    if k & 1:
        p[..., 0] = w - p[..., 0]
    return p


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_box_fusion(boxes: list[np.ndarray], scores: list[np.ndarray], iou_thresh: float = FUSION_IOU,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse per-view detections: ``boxes[v]`` (N_v, 4) XYXY and ``scores[v]`` (N_v,) in one frame.

    Boxes are taken by falling score; each joins the cluster whose fused box it overlaps most (IoU >=
    ``iou_thresh``) among those its view has not joined yet (a view already kept one box per cell after its NMS),
    or starts one. Returns fused boxes (M, 4), scores (M,) = sum of the cluster's scores / number of views, and
    each cluster's number of views, sorted by falling score.
    """
    num_views = len(boxes)
    all_boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    all_scores = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in scores])
    view_of = np.concatenate([np.full(len(np.asarray(s).reshape(-1)), v) for v, s in enumerate(scores)])
    n = len(all_scores)
    fused, weighted = np.zeros((n, 4)), np.zeros((n, 4))
    weight = np.zeros(n)
    members = np.zeros((n, max(num_views, 1)), bool)  # members[c, v]: view v already joined cluster c
    count = 0
    for i in np.argsort(-all_scores, kind="stable"):
        box, score, v = all_boxes[i], all_scores[i], view_of[i]
        target = count
        if count:
            iou = _iou_one_to_many(box, fused[:count])
            iou[members[:count, v]] = -1.0
            best = int(np.argmax(iou))
            if iou[best] >= iou_thresh:
                target = best
        if target == count:
            count += 1
        weight[target] += score
        weighted[target] += score * box
        members[target, v] = True
        fused[target] = weighted[target] / max(weight[target], 1e-12)
    support = members[:count].sum(1)
    fused_scores = weight[:count] / max(num_views, 1)
    order = np.argsort(-fused_scores, kind="stable")
    return fused[:count][order].astype(np.float32), fused_scores[order].astype(np.float32), support[order]


def average_outlines(polygons: list, boxes: np.ndarray, shape: tuple[int, int], num_vertices: int) -> np.ndarray:
    """One polygon per box from several outlines of it: the 0.5 contour of their mean mask.

    ``polygons[v]`` is (N, V, 2) (x, y) in the image frame (array or tensor; a tensor is filled on its device),
    one outline of each of the N ``boxes`` per view. The masks are averaged in each box's window, one pixel wider
    (pixel centres at +0.5, as ``polygon_to_mask``); the longest 0.5 contour is resampled to ``num_vertices``
    points. Where no pixel reaches 0.5 the first view's outline is kept.
    """
    stack = torch.stack([torch.as_tensor(views) for views in polygons]).float()  # (S, N, V, 2)
    if len(polygons) == 1:
        return stack[0].cpu().numpy()
    h, w = shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    lo = np.maximum(0, np.floor(boxes[:, :2]) - 1)
    hi = np.minimum([w, h], np.ceil(boxes[:, 2:]) + 1)
    size = np.maximum(hi - lo, 0).astype(np.int64)
    lo_t = torch.as_tensor(lo, dtype=torch.long, device=stack.device)
    size_t = torch.as_tensor(size, device=stack.device)
    out = np.empty((len(boxes), num_vertices, 2), np.float32)
    # All views of a chunk of boxes are filled at once (model/paste.py): rasterising box by box on the host was
    # most of a TTA call's time on a GPU.
    for idx, wb, hb in window_chunks(size_t, views=len(polygons), vertices=stack.shape[2]):
        mean = fill_windows(stack[:, idx], lo_t[idx], size_t[idx], wb, hb).float().mean(0).cpu().numpy()
        for k, i in enumerate(idx.tolist()):
            cw, ch = size[i]
            outline = mask_outline(mean[k, :ch, :cw], num_vertices, origin_xy=lo[i])
            out[i] = (outline if outline is not None
                      else resample_polygon(stack[0, i].cpu().numpy().reshape(-1), num_vertices))
    return out


@torch.no_grad()
def segment_with_tta(model, image: torch.Tensor, views=TTA_VIEWS["flips"], score_threshold: float = 0.0,
                     iou_thresh: float = FUSION_IOU, scale: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), scores (N,) and polygons (N, V, 2) of one (3, H, W) model input, merged over ``views``;
    each view's zoom is relative to ``scale`` (default: the config's ``model.image_scale``).

    The model's own score threshold, NMS and detection cap apply in each view; fused boxes scoring below
    ``score_threshold`` are dropped before they are outlined, and the rest capped at ``detections_per_img``.
    """
    shape = (int(image.shape[-2]), int(image.shape[-1]))
    base_scale = model.transform.image_scale if scale is None else float(scale)
    boxes, scores, outline_views = [], [], []
    for k, zoom in views:
        encoded = model.encode(view_tensor(image, k), base_scale * zoom)
        b, s = model.detect(encoded)
        boxes.append(boxes_from_view(b, k, shape).float().cpu().numpy())
        scores.append(s.float().cpu().numpy())
        if zoom == 1.0:  # outlines come from unzoomed views (their features are kept for the fused boxes)
            outline_views.append((k, encoded))
    fused, fused_scores, _ = weighted_box_fusion(boxes, scores, iou_thresh)
    keep = np.flatnonzero(fused_scores >= score_threshold)[: model.roi_heads.detections_per_img]
    fused, fused_scores = fused[keep], fused_scores[keep]
    num_v = model.config.model.num_vertices
    if len(fused) == 0:
        return fused.reshape(0, 4), fused_scores, np.zeros((0, num_v, 2), np.float32)
    polygons = outline_boxes(model, outline_views, torch.from_numpy(fused).to(image.device), shape)
    return fused, fused_scores, polygons


@torch.no_grad()
def outline_boxes(model, encoded_views, boxes: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Average outline of ``boxes`` (N, 4, image frame) over ``encoded_views`` [(k, EncodedImage), ...]."""
    outlines = []
    for k, encoded in encoded_views:
        polys = model.outline(encoded, boxes_to_view(boxes, k, shape))
        outlines.append(points_from_view(polys, k, shape).float())  # stays on the device for the fill
    return average_outlines(outlines, boxes.cpu().numpy(), shape, model.config.model.num_vertices)


@torch.no_grad()
def outline_with_tta(model, image: torch.Tensor, boxes: torch.Tensor, views=TTA_VIEWS["flips"],
                     scale: float | None = None) -> np.ndarray:
    """Polygons (N, V, 2) for given boxes (user-drawn), averaged over the unzoomed ``views`` at zoom ``scale``."""
    shape = (int(image.shape[-2]), int(image.shape[-1]))
    encoded = [(k, model.encode(view_tensor(image, k), scale)) for k, zoom in views if zoom == 1.0]
    return outline_boxes(model, encoded, boxes, shape)
