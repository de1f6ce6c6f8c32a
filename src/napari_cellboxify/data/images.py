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


# Micrometres per unit, for the spellings microscopy files use (OME-XML, ImageJ, TIFF tags).
# ImageJ writes the micro sign escaped ("\\u00B5m"); "\u03bcm" is the Greek mu some software writes instead.
MICROMETRES_PER = {"nm": 1e-3, "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "\\u00b5m": 1.0, "micron": 1.0,
                   "microns": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
# A pixel size outside this range (µm) is a writer's placeholder, not a microscope's: 1e-3 µm is finer than
# any electron microscope's pixel, 1e3 µm coarser than any slide scanner's.
PLAUSIBLE_UM = (1e-3, 1e3)


def read_pixel_size(path: str | Path) -> tuple[float, float] | None:
    """A TIFF's pixel height and width in µm from its metadata, or None when it does not say.

    Read in order: OME-XML (``PhysicalSizeY/X`` and their units), ImageJ's (``unit`` with the resolution tags),
    then the plain TIFF resolution tags in centimetres. Resolution in *inches* is ignored on purpose: 72 dpi in
    inches is the default of many writers (LIVECell's files say 1 pixel per inch), so it says nothing about the
    microscope. Files other than TIFF carry no pixel size here.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            size = (_ome_pixel_size(tif.ome_metadata) if tif.is_ome else None) or _tag_pixel_size(tif)
    except Exception:  # unreadable metadata means an uncalibrated image, not a failed segmentation
        return None
    if size is None or not all(PLAUSIBLE_UM[0] <= v <= PLAUSIBLE_UM[1] for v in size):
        return None
    return size


def _ome_pixel_size(xml: str | None) -> tuple[float, float] | None:
    import xml.etree.ElementTree as ElementTree

    if not xml:
        return None
    for element in ElementTree.fromstring(xml).iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sizes = []
        for axis in ("Y", "X"):
            value, unit = element.get(f"PhysicalSize{axis}"), element.get(f"PhysicalSize{axis}Unit", "µm")
            if value is None or unit not in MICROMETRES_PER:
                return None
            sizes.append(float(value) * MICROMETRES_PER[unit])
        return sizes[0], sizes[1]
    return None


def _tag_pixel_size(tif) -> tuple[float, float] | None:
    page = tif.pages[0]
    x_res, y_res = page.resolution  # pixels per unit
    if not (x_res > 0 and y_res > 0):
        return None
    imagej_unit = (tif.imagej_metadata or {}).get("unit")
    if imagej_unit is not None:
        factor = MICROMETRES_PER.get(str(imagej_unit).strip().lower())
    else:
        factor = 1e4 if int(page.resolutionunit) == 3 else None  # 3 = CENTIMETER; 2 = INCH: see above
    return None if factor is None else (factor / y_res, factor / x_res)


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
