"""CellBoxify: torchvision Faster R-CNN parts + a polygon branch, built from one config object."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from ..config import CellBoxifyConfig
from .polygon_head import PolygonHead
from .ignore import IgnoreAwareRPN
from .roi_heads import PolygonRoIHeads
from .transform import CellTransform

IMAGE_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics: the backbone may start from ImageNet weights
IMAGE_STD = [0.229, 0.224, 0.225]

_RESNETS = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
}


def _norm_layer(kind: str):
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "group":
        # GroupNorm trains from scratch with small batches (He et al., "Rethinking ImageNet Pre-training").
        return lambda channels: nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm '{kind}' (frozen_bn or group)")


def build_backbone(config: CellBoxifyConfig, load_pretrained: bool = True) -> tuple[BackboneWithFPN, bool]:
    """ResNet-FPN trunk; returns (backbone, whether ImageNet weights were loaded).

    ``load_pretrained=False`` skips the download (the weights will come from a checkpoint).
    """
    m = config.model
    factory, weights = _RESNETS[m.backbone]
    loaded = False
    trunk = None
    trainable = m.trainable_backbone_layers
    if m.pretrained_backbone and load_pretrained:
        if m.norm != "frozen_bn":
            warnings.warn("ImageNet weights come with batch norm; set model.norm = 'frozen_bn' to use them")
        else:
            try:
                trunk = factory(weights=weights, norm_layer=FrozenBatchNorm2d)
                loaded = True
            except Exception as exc:  # no network, hub unreachable, corrupt cache: train from scratch instead
                warnings.warn(
                    f"could not load ImageNet weights for {m.backbone} ({type(exc).__name__}: {exc}); "
                    "the backbone starts from random initialisation and all its layers are trained"
                )
                trainable = 5  # frozen random layers would never learn
    if trunk is None:
        trunk = factory(weights=None, norm_layer=_norm_layer(m.norm))
    # Freeze the stem and early stages as torchvision's reference does when starting from ImageNet weights.
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers.append("bn1")
    for name, param in trunk.named_parameters():
        if not any(name.startswith(layer) for layer in layers):
            param.requires_grad_(False)
    stage2 = trunk.inplanes // 8
    in_channels = [stage2 * 2 ** (i - 1) for i in (1, 2, 3, 4)]
    return_layers = {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)}
    backbone = BackboneWithFPN(trunk, return_layers, in_channels, m.fpn_channels)
    return backbone, loaded


class CellBoxify(FasterRCNN):
    """Mask R-CNN-style detector whose mask branch is a polygon head trained from boxes (or masks).

    Inputs: a list of float images (3, H, W) in [0, 1] (see ``data.transforms.to_model_input``).
    Training returns a dict of loss terms; evaluation returns per image ``boxes`` (N, 4) XYXY, ``scores``,
    ``labels``, ``polygons`` (N, V, 2) in (x, y) image coordinates and, with ``paste_masks``, ``masks``
    (N, 1, H, W) bool.
    """

    def __init__(self, config: CellBoxifyConfig, load_pretrained: bool = True):
        m, lo = config.model, config.loss
        backbone, self_pretrained = build_backbone(config, load_pretrained)
        anchors = AnchorGenerator(
            sizes=tuple((s,) for s in m.anchor_sizes), aspect_ratios=(tuple(m.aspect_ratios),) * len(m.anchor_sizes)
        )
        super().__init__(
            backbone,
            num_classes=2,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(backbone.out_channels, len(m.aspect_ratios)),
            rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=m.rpn_batch_size_per_image,
            box_batch_size_per_image=m.box_batch_size_per_image,
            box_score_thresh=m.box_score_thresh,
            box_nms_thresh=m.box_nms_thresh,
            box_detections_per_img=m.detections_per_img,
            representation_size=m.representation_size,
            min_size=1,
            max_size=1,
        )
        if m.representation_size != 1024:  # torchvision's box head width is fixed unless we give the head
            from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

            res = self.roi_heads.box_roi_pool.output_size[0]
            self.roi_heads.box_head = TwoMLPHead(backbone.out_channels * res**2, m.representation_size)
            self.roi_heads.box_predictor = FastRCNNPredictor(m.representation_size, 2)
        self.rpn = IgnoreAwareRPN.like(self.rpn)  # same RPN; uncertain pseudo-labels stay out of its sampling
        old = self.roi_heads
        self.roi_heads = PolygonRoIHeads(
            old.box_roi_pool,
            old.box_head,
            old.box_predictor,
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=m.box_batch_size_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=m.box_score_thresh,
            nms_thresh=m.box_nms_thresh,
            detections_per_img=m.detections_per_img,
            polygon_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=m.polygon_roi_size, sampling_ratio=2),
            polygon_head=PolygonHead(
                backbone.out_channels, m.head_channels, m.num_vertices, m.refine_stages, m.polygon_init,
                passes=m.refine_passes,
            ),
            loss_config=lo,
            image_mean=IMAGE_MEAN,
            image_std=IMAGE_STD,
            inference_chunk=m.inference_chunk,
            clip_to_box=m.clip_polygons_to_box,
        )
        self.transform = CellTransform(m.image_scale, IMAGE_MEAN, IMAGE_STD, paste_masks=m.paste_masks)
        self.config = config
        self.pretrained_loaded = self_pretrained

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None, *,
                scale: float | None = None, paste: bool | None = None):
        """torchvision's detection forward; ``scale`` (the zoom) and ``paste`` (full-resolution masks beside the
        polygons) default to the config's ``model.image_scale`` and ``model.paste_masks``."""
        if self.training and targets is None:
            raise ValueError("training mode needs targets (a list of dicts with 'boxes' and 'labels')")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        if targets is not None:
            targets = [{k: v for k, v in t.items()} for t in targets]  # the transform edits them in place
        image_list, targets = self.transform(images, targets, scale=scale)
        if targets is not None:
            for t in targets:
                boxes = t["boxes"]
                if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                    raise ValueError("all boxes need positive width and height (x2 > x1, y2 > y1)")
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, roi_losses = self.roi_heads(
            features, proposals, image_list.image_sizes, targets, images=image_list.tensors
        )
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes, paste=paste)

    @torch.no_grad()
    def segment_boxes(self, images: list[Tensor], boxes_xyxy: list[Tensor], scale: float | None = None) -> list[Tensor]:
        """Polygons (N_i, V, 2) for given boxes (N_i, 4) XYXY in each image's own frame (oracle/user boxes)."""
        return [self.outline(self.encode(image, scale), boxes) for image, boxes in zip(images, boxes_xyxy)]

    # Inference in pieces, for test-time augmentation (tta.py): one image is encoded once, its boxes found,
    # and later outlined from the same features for boxes fused across views.
    @torch.no_grad()
    def encode(self, image: Tensor, scale: float | None = None) -> "EncodedImage":
        """Features of one (3, H, W) image seen at zoom ``scale`` (default: the config's ``model.image_scale``)."""
        image_list, _ = self.transform([image], None, scale=scale)
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        (h, w), (rh, rw) = image.shape[-2:], image_list.image_sizes[0]
        return EncodedImage(image_list, features, (rw / w, rh / h))

    @torch.no_grad()
    def detect(self, encoded: "EncodedImage") -> tuple[Tensor, Tensor]:
        """Boxes (N, 4) XYXY in the image's own frame and their scores, without polygons."""
        proposals, _ = self.rpn(encoded.image_list, encoded.features)
        heads, sizes = self.roi_heads, encoded.image_list.image_sizes
        box_features = heads.box_head(heads.box_roi_pool(encoded.features, proposals, sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, _ = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)
        return boxes[0] / encoded.ratio_xyxy(boxes[0]), scores[0]

    @torch.no_grad()
    def outline(self, encoded: "EncodedImage", boxes_xyxy: Tensor) -> Tensor:
        """Polygons (N, V, 2) in the image's own frame for boxes (N, 4) XYXY in that frame."""
        ratio = encoded.ratio_xyxy(boxes_xyxy)
        polys = self.roi_heads.predict_polygons(encoded.features, [boxes_xyxy * ratio],
                                                encoded.image_list.image_sizes)[0]
        return polys / ratio[:2]


@dataclass
class EncodedImage:
    image_list: ImageList
    features: "OrderedDict[str, Tensor]"
    ratio: tuple[float, float]  # (x, y) size of the network's image over the original's

    def ratio_xyxy(self, like: Tensor) -> Tensor:
        return like.new_tensor(self.ratio * 2)


def build_model(config: CellBoxifyConfig, load_pretrained: bool = True) -> CellBoxify:
    """Build CellBoxify from a config (see ``config.CellBoxifyConfig``).

    ``load_pretrained=False`` builds the architecture only, for loading a checkpoint into it.
    """
    config.validate()
    return CellBoxify(config, load_pretrained)
