"""Ignore regions in the detector's sampling: uncertain pseudo-labels are neither cell nor background.

Self-training labels unlabeled images with a model's own boxes. Its confident boxes train as cells; a cell it
was unsure of must not then be taught as background, which is what an unlabeled cell would be. Anchors (RPN)
and proposals (box head) that would be background but overlap an ignore region get label -1, which
torchvision's balanced sampler never draws, so they give neither a positive nor a negative example.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou

# A pseudo-box is a weak model's guess of where a cell is, less exact than a drawn box: a candidate a third
# overlapping it may well be that cell (the RPN's own background threshold is the same 0.3).
IGNORE_IOU = 0.3


def mark_ignored(labels: Tensor, candidates: Tensor, ignore_boxes: Tensor | None, iou_thresh: float = IGNORE_IOU) -> Tensor:
    """Set background labels (0) of candidates (K, 4) overlapping any ignore box by >= iou_thresh to -1."""
    if ignore_boxes is None or ignore_boxes.numel() == 0 or candidates.numel() == 0:
        return labels
    overlap = box_iou(ignore_boxes.to(candidates.dtype), candidates).max(dim=0).values
    labels = labels.clone()
    labels[(labels == 0) & (overlap >= iou_thresh)] = -1
    return labels


class IgnoreAwareRPN(RegionProposalNetwork):
    """torchvision's RPN; anchors on ignore regions (target key ``ignore_boxes``) are left out of its loss."""

    @classmethod
    def like(cls, rpn: RegionProposalNetwork) -> "IgnoreAwareRPN":
        return cls(
            rpn.anchor_generator, rpn.head,
            fg_iou_thresh=rpn.proposal_matcher.high_threshold, bg_iou_thresh=rpn.proposal_matcher.low_threshold,
            batch_size_per_image=rpn.fg_bg_sampler.batch_size_per_image,
            positive_fraction=rpn.fg_bg_sampler.positive_fraction,
            pre_nms_top_n=rpn._pre_nms_top_n, post_nms_top_n=rpn._post_nms_top_n,
            nms_thresh=rpn.nms_thresh, score_thresh=rpn.score_thresh,
        )

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched = super().assign_targets_to_anchors(anchors, targets)
        labels = [mark_ignored(lab, anc, t.get("ignore_boxes")) for lab, anc, t in zip(labels, anchors, targets)]
        return labels, matched


class IgnoreAwareRoIHeads(RoIHeads):
    """Proposals on ignore regions are left out of the box head's sampling (and so of the polygon losses)."""

    _ignore_boxes: list | None = None

    def select_training_samples(self, proposals, targets):
        # torchvision's matcher only sees boxes and labels; the ignore regions ride along for this one call.
        self._ignore_boxes = [t.get("ignore_boxes") for t in targets]
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._ignore_boxes = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        if self._ignore_boxes is not None:
            labels = [mark_ignored(lab, props, ign) for lab, props, ign in zip(labels, proposals, self._ignore_boxes)]
        return matched_idxs, labels
