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
