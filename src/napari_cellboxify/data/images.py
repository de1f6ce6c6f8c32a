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


# A single-image TIFF with more pixels than this is read region by region (open_image), not whole: 4096² 8-bit
# is 16 MB, while the work on it is done in tiles anyway (predict.LARGE_SIDE).
LAZY_PIXELS = 4096 * 4096


def open_image(path: str | Path) -> "np.ndarray | TiffRegions":
    """Like ``read_image``, but a large single-image TIFF comes back as a ``TiffRegions`` that reads only the
    part asked for, so that memory follows the tile being worked on, not the image (stacks, small images and
    other formats are read whole)."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        try:
            regions = TiffRegions(path)
        except Exception:  # a layout not read by regions, or no TIFF at all: the whole-file reader decides
            regions = None
        if regions is not None and regions.shape[0] * regions.shape[1] > LAZY_PIXELS:
            return regions
    return read_image(path)


class TiffRegions:
    """A 2-D (or RGB) single-page TIFF read region by region: only the tiles or strips a region touches are
    read and decoded (any compression tifffile decodes; uncompressed data row band by row band). ``shape``,
    ``dtype`` and ``ndim`` are the image's; ``image[y0:y1, x0:x1]`` (also strided) and ``read`` return numpy
    arrays; ``np.asarray(image)`` reads it whole."""

    BAND = 256  # rows read at a time for a strided view of uncompressed data

    def __init__(self, path: str | Path):
        import tifffile

        self.path = Path(path)
        with tifffile.TiffFile(self.path) as tif:
            if len(tif.pages) != 1 or len(tif.series) != 1:
                raise ImageReadError(f"{self.path} holds more than one image")
            page = tif.pages[0]
            shape, samples = tuple(int(v) for v in page.shape), int(page.samplesperpixel)
            if len(shape) not in (2, 3) or (len(shape) == 3 and (shape[-1] != samples or samples not in (3, 4))):
                raise ImageReadError(f"{self.path} is not a 2-D or RGB image")
            if samples > 1 and page.planarconfig != 1:  # separate colour planes: not read by regions
                raise ImageReadError(f"{self.path} stores its colours in separate planes")
            self.shape, self.dtype = shape, np.dtype(page.dtype)
            self.file_dtype = self.dtype.newbyteorder(tif.byteorder)
            # uncompressed and in one piece: rows are read straight from the file
            self.raw_offset = int(page.dataoffsets[0]) if page.compression == 1 and page.is_contiguous else None
            if page.is_tiled:
                self.chunk = (int(page.tilelength), int(page.tilewidth))
            else:
                self.chunk = (int(min(page.rowsperstrip or shape[0], shape[0])), int(shape[1]))
            self.grid = (-(-shape[0] // self.chunk[0]), -(-shape[1] // self.chunk[1]))
            self.offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            self.counts = np.asarray(page.databytecounts, dtype=np.int64)
            if self.raw_offset is None and len(self.offsets) != self.grid[0] * self.grid[1]:
                raise ImageReadError(f"{self.path}: unexpected tile layout")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        whole = self.read(0, self.shape[0], 0, self.shape[1])
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key):
        rows, cols = (tuple(key) + (slice(None),) * 2)[:2] if isinstance(key, tuple) else (key, slice(None))
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise TypeError("a TiffRegions is read with two slices, image[y0:y1, x0:x1]")
        (y0, y1, sy), (x0, x1, sx) = rows.indices(self.shape[0]), cols.indices(self.shape[1])
        if sy < 1 or sx < 1:
            raise TypeError("a TiffRegions is read with forward slices")
        if sy == 1 and sx == 1:
            return self.read(y0, y1, x0, x1)
        # strided (a sample for statistics): band by band, so that memory stays one band
        band = self.BAND if self.raw_offset is not None else max(self.chunk[0], 1)
        parts = [self.read(b0, min(b0 + band, y1), x0, x1)[(y0 - b0) % sy::sy, ::sx] for b0 in range(y0, y1, band)]
        return np.concatenate(parts)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` (clipped to the image)."""
        h, w = self.shape[:2]
        y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)) + self.shape[2:], self.dtype)
        if self.raw_offset is not None:
            return self._read_raw(y0, y1, x0, x1)
        return self._read_chunks(y0, y1, x0, x1)

    def _read_raw(self, y0, y1, x0, x1) -> np.ndarray:
        row = self.shape[1] * int(np.prod(self.shape[2:], dtype=np.int64)) * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            handle.seek(self.raw_offset + y0 * row)
            band = np.frombuffer(handle.read((y1 - y0) * row), self.file_dtype)
        band = band.reshape((y1 - y0,) + self.shape[1:])
        return band[:, x0:x1].astype(self.dtype)  # a copy in native byte order: the band is not kept

    def _read_chunks(self, y0, y1, x0, x1) -> np.ndarray:
        import tifffile

        out = np.zeros((y1 - y0, x1 - x0) + self.shape[2:], self.dtype)
        (ch, cw), nx = self.chunk, self.grid[1]
        with tifffile.TiffFile(self.path) as tif:
            page, handle = tif.pages[0], tif.filehandle
            for ty in range(y0 // ch, (y1 - 1) // ch + 1):
                for tx in range(x0 // cw, (x1 - 1) // cw + 1):
                    index = ty * nx + tx
                    if self.counts[index] == 0:  # an empty tile: zeros
                        continue
                    handle.seek(int(self.offsets[index]))
                    chunk = page.decode(handle.read(int(self.counts[index])), index)[0]
                    chunk = chunk.reshape(chunk.shape[1:3] + self.shape[2:])
                    cy, cx = ty * ch, tx * cw
                    sy0, sy1, sx0, sx1 = max(y0, cy), min(y1, cy + chunk.shape[0]), max(x0, cx), min(x1, cx + chunk.shape[1])
                    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = chunk[sy0 - cy:sy1 - cy, sx0 - cx:sx1 - cx]
        return out


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
