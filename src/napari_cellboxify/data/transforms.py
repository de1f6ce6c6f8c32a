"""Image normalisation (any microscope image -> float gray in [0, 1], CLAHE) and training augmentations.

Augmentations act on a gray image (H, W), boxes (N, 4) XYXY and optional masks (N, H, W) together, so boxes
follow every transform.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from skimage import exposure

from ..config import DataConfig


class ImageError(ValueError):
    """An image that cannot be used as it is; the message says why."""


def to_gray(image: np.ndarray) -> np.ndarray:
    """2-D, RGB (H, W, 3) or RGBA (H, W, 4) -> (H, W) float64. Stacks must be sliced by the caller."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.number)):
        raise ImageError(f"image has non-numeric dtype {image.dtype}")
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])  # luminance, alpha dropped
    elif image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    elif image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ImageError(
            f"expected a 2-D image (or RGB/RGBA), got shape {tuple(image.shape)}: choose one frame/slice of a stack"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"image is empty (shape {tuple(image.shape)})")
    return image.astype(np.float64, copy=False)


def normalize_image(image: np.ndarray, clahe: bool = True, clip_limit: float = 0.01) -> np.ndarray:
    """Any 2-D/RGB image -> float32 (H, W) in [0, 1]: robust percentile scaling, then CLAHE.

    8/16-bit, float (NaN/inf replaced), RGB(A) and constant images are handled the same way; a constant image
    becomes zeros. Percentiles (0.1, 99.9) make 8-bit and 16-bit recordings of the same scene look alike.
    """
    gray = to_gray(image)
    finite = np.isfinite(gray)
    if not finite.all():
        fill = float(np.median(gray[finite])) if finite.any() else 0.0
        gray = np.where(finite, gray, fill)
    lo, hi = np.percentile(gray, (0.1, 99.9))
    if hi - lo <= 1e-12:
        lo, hi = float(gray.min()), float(gray.max())
    if hi - lo <= 1e-12:
        return np.zeros(gray.shape, dtype=np.float32)
    gray = np.clip((gray - lo) / (hi - lo), 0.0, 1.0)
    if clahe and min(gray.shape) >= 8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns on precision loss for float input; harmless here
            gray = exposure.equalize_adapthist(gray, clip_limit=clip_limit)
    return gray.astype(np.float32)


def read_region(image, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` as a numpy array, for arrays, memory maps and ``images.TiffRegions`` alike."""
    return np.asarray(image[max(0, y0):y1, max(0, x0):x1])


class TileNormaliser:
    """``normalize_image`` for an image too large to normalise whole, tile by tile in bounded memory.

    The contrast stretch (percentiles 0.1, 99.9) comes from a strided sample of the whole image (at most
    ``sample_pixels`` pixels), so that every tile shares it; CLAHE runs on each tile with ``context`` px of image
    around it and a fixed kernel (an eighth of a tile with its context, what CLAHE on that window alone uses), and
    the context is cut off again. No full-size float copy of the image is ever made.
    """

    def __init__(self, image, clahe: bool = True, clip_limit: float = 0.01, tile: int = 1024, context: int = 64,
                 sample_pixels: int = 2048 * 2048):
        self.image, self.clahe, self.clip_limit, self.context = image, clahe, clip_limit, context
        h, w = image.shape[:2]
        stride = max(1, int(np.ceil(np.sqrt(h * w / sample_pixels))))
        sample = to_gray(image[::stride, ::stride])
        finite = np.isfinite(sample)
        self.fill = float(np.median(sample[finite])) if finite.any() else 0.0
        sample = np.where(finite, sample, self.fill)
        lo, hi = np.percentile(sample, (0.1, 99.9))
        if hi - lo <= 1e-12:
            lo, hi = float(sample.min()), float(sample.max())
        self.lo, self.hi = float(lo), float(hi)
        self.kernel = max(8, (tile + 2 * context) // 8)

    def __call__(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The normalised (float32, [0, 1]) pixels ``[y0:y1, x0:x1]``."""
        h, w = self.image.shape[:2]
        c = self.context
        wy0, wy1, wx0, wx1 = max(0, y0 - c), min(h, y1 + c), max(0, x0 - c), min(w, x1 + c)
        gray = to_gray(read_region(self.image, wy0, wy1, wx0, wx1))
        inner = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
        gray = np.where(np.isfinite(gray), gray, self.fill)
        if self.hi - self.lo <= 1e-12 or float(gray.max()) - float(gray.min()) <= 1e-12:
            return np.zeros((y1 - y0, x1 - x0), np.float32)  # no contrast here: nothing to equalise
        gray = np.clip((gray - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        if self.clahe and min(gray.shape) >= 8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gray = exposure.equalize_adapthist(gray, kernel_size=self.kernel, clip_limit=self.clip_limit)
        return gray[inner].astype(np.float32)


def to_model_input(gray: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) float in [0, 1] -> (3, H, W) float32 tensor (gray repeated: ImageNet-style backbones take RGB)."""
    t = torch.as_tensor(np.ascontiguousarray(gray), dtype=torch.float32)
    return t[None].expand(3, -1, -1).contiguous()


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(array)).float()
    t = t[None] if t.dim() == 3 else t[None, None]
    mode = "nearest" if nearest else "bilinear"
    out = F.interpolate(t, size=size, mode=mode, align_corners=False if not nearest else None)
    return out[0].numpy() if array.ndim == 3 else out[0, 0].numpy()


def random_scale_crop(image, boxes, masks, rng: np.random.Generator, config: DataConfig):
    """Zoom by a random training size / reference size, then take a random crop of ``crop_size``.

    The crop window is chosen in the source frame and only that window is resized, so memory stays bounded
    for images with hundreds of masks. Boxes are clipped to the window; tiny leftovers are dropped later.
    """
    h, w = image.shape
    scale = float(rng.choice(config.train_sizes)) / config.reference_size
    crop = config.crop_size
    if crop is None:
        win_h, win_w, y0, x0 = h, w, 0, 0
    else:
        win_h, win_w = min(h, int(round(crop / scale))), min(w, int(round(crop / scale)))
        y0 = int(rng.integers(0, h - win_h + 1))
        x0 = int(rng.integers(0, w - win_w + 1))
    out_h, out_w = max(1, int(round(win_h * scale))), max(1, int(round(win_w * scale)))
    image = image[y0 : y0 + win_h, x0 : x0 + win_w]
    image = _resize(image, (out_h, out_w), nearest=False) if (out_h, out_w) != image.shape else image.copy()
    sx, sy = out_w / win_w, out_h / win_h
    boxes = boxes.copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - x0, 0, win_w) * sx
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] - y0, 0, win_h) * sy
    if masks is not None:
        masks = masks[:, y0 : y0 + win_h, x0 : x0 + win_w]
        if (out_h, out_w) != masks.shape[1:] and len(masks):
            masks = _resize(masks.astype(np.float32), (out_h, out_w), nearest=True).astype(np.uint8)
        elif not len(masks):
            masks = np.zeros((0, out_h, out_w), dtype=np.uint8)
    return image, boxes, masks


def flip_rotate(image, boxes, masks, rng: np.random.Generator, config: DataConfig):
    """Random horizontal/vertical flips and 90-degree rotations (cells have no preferred orientation)."""
    h, w = image.shape
    boxes = boxes.copy()
    if config.hflip and rng.random() < 0.5:
        image = image[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        masks = masks[:, :, ::-1] if masks is not None else None
    if config.vflip and rng.random() < 0.5:
        image = image[::-1, :]
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
        masks = masks[:, ::-1, :] if masks is not None else None
    if config.rot90 and rng.random() < 0.5:
        image, boxes, masks = rotate90(image, boxes, masks)
    masks = np.ascontiguousarray(masks) if masks is not None else None
    return np.ascontiguousarray(image), boxes, masks


def rotate90(image, boxes, masks):
    """Rotate by 90 degrees counter-clockwise (np.rot90): pixel (r, c) -> (W-1-c, r)."""
    h, w = image.shape
    image = np.rot90(image)
    x1, y1, x2, y2 = boxes.T
    boxes = np.stack([y1, w - x2, y2, w - x1], axis=1) if len(boxes) else boxes
    masks = np.rot90(masks, axes=(1, 2)) if masks is not None else None
    return image, boxes, masks


def drop_small(boxes, masks, min_size: float):
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return boxes[keep], (masks[keep] if masks is not None else None), keep


def augment(image, boxes, masks, rng: np.random.Generator, config: DataConfig):
    """The full training augmentation: zoom + crop, flips, rotations; boxes smaller than min_box_size dropped."""
    image, boxes, masks, _ = augment_with_ignore(image, boxes, None, masks, rng, config)
    return image, boxes, masks


def augment_with_ignore(image, boxes, ignore, masks, rng: np.random.Generator, config: DataConfig):
    """``augment`` that also carries ignore regions (M, 4) XYXY through the same zoom, crop, flips and rotations.

    Returns (image, boxes, masks, ignore); ``ignore`` is (0, 4) when none was given. The random draws are the
    same as ``augment``'s, so a sample without ignore regions gets the identical crop either way.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.zeros((0, 4), np.float32) if ignore is None else np.asarray(ignore, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    both = np.concatenate([boxes, ignore])  # one array, so every geometric step moves both sets alike
    image, both, masks = random_scale_crop(image, both, masks, rng, config)
    image, both, masks = flip_rotate(image, both, masks, rng, config)
    boxes, masks, _ = drop_small(both[:n], masks, config.min_box_size)
    ignore, _, _ = drop_small(both[n:], None, config.min_box_size)
    return image, boxes, masks, ignore
