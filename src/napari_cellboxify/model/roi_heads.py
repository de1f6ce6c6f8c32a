"""torchvision's RoIHeads with a polygon branch in place of the mask branch.

The box branch is torchvision's own (sampling, Fast R-CNN loss, post-processing). The polygon branch trains on
positive proposals, each matched to a GT box, with the box-supervised losses (or the mask loss in full-mask
mode); at inference it refines a polygon inside every detected box.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign, roi_align

from ..config import LossConfig
from ..losses.mask import mask_loss
from ..losses.crops import gt_box_crops
from ..losses.pairwise import global_pairwise_loss, local_pairwise_loss
from ..losses.rasterize import pad_boxes, polygons_to_box_frame, soft_rasterize_logits
from ..losses.fill import fill_prior_loss
from ..losses.unary import unary_loss
from .ignore import IgnoreAwareRoIHeads
from .polygon_head import PolygonHead, box_to_image


class PolygonRoIHeads(IgnoreAwareRoIHeads):
    def __init__(
        self,
        *args,
        polygon_roi_pool: MultiScaleRoIAlign,
        polygon_head: PolygonHead,
        loss_config: LossConfig,
        image_mean: list[float],
        image_std: list[float],
        inference_chunk: int = 500,
        clip_to_box: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)  # mask_* stay None: the parent runs the box branch only
        self.polygon_roi_pool = polygon_roi_pool
        self.polygon_head = polygon_head
        self.loss_config = loss_config
        self.inference_chunk = inference_chunk
        self.clip_to_box = clip_to_box
        # False: training computes the box losses only (the Trainer sets it when the mask branch is kept as loaded,
        # train.trainable detector/box_heads): its terms would otherwise move the features it reads, and cost time.
        self.polygon_losses = True
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, -1, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------------------------------
    def forward(self, features, proposals, image_shapes, targets=None, images: Tensor | None = None):
        if self.training:
            if targets is None or images is None:
                raise ValueError("training needs targets and the batched images")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            if self.polygon_losses:
                losses.update(self._polygon_losses(features, proposals, matched_idxs, labels, targets, image_shapes,
                                                   images))
            return [], losses

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        polygons = self.predict_polygons(features, boxes, image_shapes)
        result = [
            {"boxes": b, "scores": s, "labels": lab, "polygons": p}
            for b, s, lab, p in zip(boxes, scores, labels, polygons)
        ]
        return result, {}

    # ----------------------------------------------------------------------------------------------------------
    def predict_polygons(self, features, boxes: list[Tensor], image_shapes) -> list[Tensor]:
        """Final-stage polygons (N_i, V, 2) in the (resized) image frame for each image's boxes."""
        counts = [len(b) for b in boxes]
        num_v = self.polygon_head.init_contour.shape[0]
        flat_boxes = torch.cat(boxes)
        image_index = torch.repeat_interleave(torch.arange(len(boxes), device=flat_boxes.device),
                                              torch.tensor(counts, device=flat_boxes.device))
        out = [flat_boxes.new_zeros((0, num_v, 2))]
        # Chunks bound memory: 2,000 RoIs x 256 ch x 14 x 14 is 400 MB of features at once. The boxes are sorted
        # by image, so the pooled RoIs of a chunk come back in the chunk's own order.
        for start in range(0, flat_boxes.shape[0], self.inference_chunk):
            chunk_boxes = flat_boxes[start : start + self.inference_chunk]
            idx = image_index[start : start + self.inference_chunk]
            per_image = [chunk_boxes[idx == i] for i in range(len(boxes))]
            vertices = self.polygon_head(self.polygon_roi_pool(features, per_image, image_shapes))[-1]
            if self.clip_to_box:
                vertices = vertices.clamp(0.0, 1.0)  # box-normalised: [0, 1] is the box itself
            out.append(box_to_image(vertices, chunk_boxes))
        polys = torch.cat(out)
        return list(polys.split(counts))

    # ----------------------------------------------------------------------------------------------------------
    def _polygon_losses(self, features, proposals, matched_idxs, labels, targets, image_shapes, images):
        cfg = self.loss_config
        pos_boxes, gt_boxes, gt_index, image_index = [], [], [], []
        for i, (props, matched, lab) in enumerate(zip(proposals, matched_idxs, labels)):
            pos = torch.nonzero(lab > 0).flatten()
            if pos.numel() > cfg.max_polygon_rois_per_image:
                pos = pos[torch.randperm(pos.numel(), device=pos.device)[: cfg.max_polygon_rois_per_image]]
            pos_boxes.append(props[pos])
            gt_boxes.append(targets[i]["boxes"][matched[pos]])
            gt_index.append(matched[pos])
            image_index.append(torch.full_like(pos, i))
        n_pos = sum(len(b) for b in pos_boxes)
        names = ("loss_mask",) if cfg.supervision == "mask" else ("loss_unary", "loss_local", "loss_global")
        if cfg.supervision == "box" and cfg.fill_weight > 0:
            names += ("loss_fill",)
        if n_pos == 0:
            # Keeps every parameter in the graph (DDP), the branch's own too: with the rest frozen
            # (train.trainable=polygon_head) the features carry no gradient, and a batch without cells would leave
            # the loss with nothing to differentiate. With cells the losses reach every parameter of the branch
            # (every stage is supervised): this term, one sum per tensor, would only add operations to each step.
            zero = (sum(f.sum() for f in features.values()) + sum(p.sum() for p in self.polygon_head.parameters()))
            return {name: zero * 0.0 for name in names}

        roi_features = self.polygon_roi_pool(features, pos_boxes, image_shapes)
        stages = self.polygon_head(roi_features)
        # Every stage is supervised (deep supervision, as in Deep Snake/BoxSnake), all stages in one pass: each term
        # is a mean over RoIs (the local term over pixel pairs, whose weights are the same in every stage), so on
        # the stages' polygons stacked it is the mean of its per-stage values, in one stage's number of operations (a
        # GPU step is launch-bound: bench_speed counts them).
        repeat = len(stages)
        vertices = torch.cat(stages)
        props = torch.cat(pos_boxes).repeat(repeat, 1)
        gts = torch.cat(gt_boxes)
        img_idx = torch.cat(image_index)
        size, pad = cfg.raster_size, cfg.raster_padding
        poly_img = box_to_image(vertices, props)
        gts_all = gts.repeat(repeat, 1)
        logits = soft_rasterize_logits(polygons_to_box_frame(poly_img, gts_all, size, pad), size, cfg.inv_smoothness)
        if cfg.supervision == "mask":
            crop_boxes = torch.cat([img_idx[:, None].to(gts.dtype), pad_boxes(gts, pad)], dim=1)
            masks = self._gt_mask_crops(targets, torch.cat(gt_index), img_idx, crop_boxes)
            return {"loss_mask": mask_loss(logits, masks.repeat(repeat, 1, 1))}

        gray = images[:, :1] * self.image_std[:, :1] + self.image_mean[:, :1]  # undo normalisation -> [0, 1]
        crops, inside = gt_box_crops(gray, img_idx, gts, cfg)
        crops, inside = crops.repeat(repeat, 1, 1, 1), inside.repeat(repeat, 1, 1)
        losses = {
            "loss_unary": unary_loss(poly_img, gts_all),
            "loss_local": local_pairwise_loss(
                logits,
                crops[:, 0],
                inside,
                kernel=cfg.local_kernel,
                dilation=cfg.local_dilation,
                similarity_scale=cfg.local_similarity_scale,
                similarity_threshold=cfg.local_similarity_threshold,
            ),
            "loss_global": global_pairwise_loss(logits, crops[:, 1], cfg.global_normalize),
        }
        if "loss_fill" in names:
            losses["loss_fill"] = fill_prior_loss(poly_img, gts_all, cfg.min_fill)
        return losses

    def _gt_mask_crops(self, targets, gt_index: Tensor, img_idx: Tensor, crop_boxes: Tensor) -> Tensor:
        size = self.loss_config.raster_size
        crops = []
        for i, target in enumerate(targets):
            sel = img_idx == i
            if not sel.any():
                continue
            if "masks" not in target:
                raise ValueError("full-mask supervision needs 'masks' in the targets (loss.supervision = 'mask')")
            masks = target["masks"][:, None].to(crop_boxes.dtype)
            rois = crop_boxes[sel].clone()
            rois[:, 0] = gt_index[sel].to(rois.dtype)  # the "batch" index picks the matched GT mask
            crops.append(roi_align(masks, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True))
        return torch.cat(crops)[:, 0].clamp(0, 1)
