"""Normalise/batch images and map results back: torchvision's transform with a fixed zoom instead of a fixed side.

Cells have a physical size, so images are not resized to a fixed shorter side: the network sees pixels at
``image_scale`` (multiscale training zooms in the data pipeline). Results come back as boxes and polygons in the
input image's frame, plus full-resolution masks rasterised from the polygons when ``paste_masks`` is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from .paste import polygons_to_masks_torch


class CellTransform(GeneralizedRCNNTransform):
    """``image_scale`` and ``paste_masks`` are the defaults of the config the model was built with; a call may
    pass others (``scale=``, ``paste=``), so that callers never change a model other threads may be using."""

    def __init__(self, image_scale: float, image_mean, image_std, paste_masks: bool = True):
        super().__init__(min_size=1, max_size=1, image_mean=image_mean, image_std=image_std)
        self.image_scale = float(image_scale)
        self.paste_masks = paste_masks

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None,
                scale: float | None = None) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """Normalise, zoom by ``scale`` (default ``image_scale``) and batch, as torchvision's transform does with
        its fixed side."""
        scale = self.image_scale if scale is None else float(scale)
        if not scale > 0:
            raise ValueError(f"the zoom (image scale) must be > 0, got {scale}")
        images = list(images)
        if targets is not None:
            targets = [dict(t) for t in targets]
        for i, image in enumerate(images):
            if image.dim() != 3:
                raise ValueError(f"images is expected to be a list of 3d tensors of shape [C, H, W], got {image.shape}")
            image = self.normalize(image)
            image, target = self.resize(image, targets[i] if targets is not None else None, scale)
            images[i] = image
            if targets is not None:
                targets[i] = target
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return ImageList(self.batch_images(images, size_divisible=self.size_divisible), sizes), targets

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None, scale: float | None = None):
        scale = self.image_scale if scale is None else scale
        if scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
            if "ignore_boxes" in target:
                target["ignore_boxes"] = resize_boxes(target["ignore_boxes"], (h, w), image.shape[-2:])
            if "masks" in target:
                masks = target["masks"][:, None].float()
                target["masks"] = F.interpolate(masks, size=image.shape[-2:], mode="nearest")[:, 0].byte()
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes, paste: bool | None = None):
        """Boxes and polygons back in each input image's frame; full-resolution masks too when ``paste`` (default
        ``paste_masks``)."""
        paste = self.paste_masks if paste is None else paste
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            ratio = torch.tensor(
                [o_im_s[1] / im_s[1], o_im_s[0] / im_s[0]], dtype=pred["polygons"].dtype, device=pred["polygons"].device
            )
            pred["polygons"] = pred["polygons"] * ratio
            if paste:
                size = (int(o_im_s[0]), int(o_im_s[1]))
                # On the polygons' device: a scanline fill as tensor operations, faster than scikit-image's fill
                # on a CPU and no host round trip of an (N, H, W) array on a GPU (bench_inference_stages.py).
                pred["masks"] = polygons_to_masks_torch(pred["polygons"].detach(), size)[:, None]
        return result
