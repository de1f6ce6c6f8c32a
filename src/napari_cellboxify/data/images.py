"""Reading microscope images from disk with clear errors (LIVECell TIFFs are LZW: tifffile + imagecodecs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
    """The file is missing or is not an image this package can read."""


TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2-D/RGB image (TIFF via tifffile, PNG/JPEG/BMP via scikit-image)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            image = tifffile.imread(path)
        else:
            from skimage import io

            image = io.imread(path)
    except Exception as exc:  # each reader raises its own types; all mean "not a readable image"
        raise ImageReadError(f"cannot read {path} as an image: {type(exc).__name__}: {exc}") from None
    image = np.asarray(image)
    if image.size == 0 or not np.issubdtype(image.dtype, np.number) and image.dtype != bool:
        raise ImageReadError(f"{path} holds no numeric image data")
    return image


def image_planes(image: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """The 2-D (or RGB/RGBA) planes of an image or a stack, each with its index in the leading axes.

    ``[((), image)]`` for one plane; ``[((0,), image[0]), ...]`` for a (T or Z, H, W) stack; ``((t, z), ...)``
    for (T, Z, H, W); a last axis of 3 or 4 is colour, as napari guesses it. A (3, H, W) file is therefore three
    planes, which is what napari shows too.
    """
    image = np.asarray(image)
    rgb = image.ndim >= 3 and image.shape[-1] in (3, 4)
    leading = image.shape[:-3] if rgb else image.shape[:-2]
    return [(index, image[index]) for index in np.ndindex(*leading)]
