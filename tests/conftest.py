import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# The cores are shared out between pytest-xdist's workers (one each on 2 cores): oversubscribed threads would
# slow every test down.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIVECELL = DATA / "livecell-mini"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args) -> CliResult:
    """``cellboxify ARGS`` run in this process: its exit status and what it printed, as a shell sees them.

    In-process because a fresh interpreter spends ~4 s importing torch per call; tests/test_package.py runs the
    installed entry point itself.
    """
    from napari_cellboxify.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors exit 2
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def livecell_dir() -> Path:
    if not (LIVECELL / "train" / "annotations.json").exists():
        pytest.skip(f"LIVECell mini data not found at {LIVECELL} (see ../shared/data/README.md)")
    return LIVECELL


def write_synthetic_coco(folder: Path, n_images: int = 3, shape=(128, 128), n_cells: int = 8, seed: int = 0,
                         with_segmentation: bool = True) -> tuple[Path, Path]:
    """A small COCO dataset of synthetic cells (TIFF images, boxes and RLE masks); returns (json, image dir)."""
    import json

    import numpy as np
    import tifffile
    from pycocotools import mask as mask_utils

    from napari_cellboxify.data.synthetic import synthetic_cells

    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    for i in range(n_images):
        syn = synthetic_cells(shape, n_cells, seed=seed + i)
        name = f"synthetic_{i}.tif"
        tifffile.imwrite(images_dir / name, syn.image)
        coco["images"].append({"id": i + 1, "file_name": name, "height": shape[0], "width": shape[1]})
        for box, mask in zip(syn.boxes_xyxy, syn.masks()):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum())}
            if with_segmentation:
                rle = mask_utils.encode(np.asfortranarray(mask))
                rle["counts"] = rle["counts"].decode("ascii")
                ann["segmentation"] = rle
            coco["annotations"].append(ann)
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path, images_dir


def tiny_config(steps: int = 4):
    """The smallest useful model, for tests that train a few steps."""
    from napari_cellboxify.recipes import small_cpu_config

    c = small_cpu_config(steps=steps, lr=1e-3, batch_size=1, log_every=1, checkpoint_every=2)
    c.model.fpn_channels = 32
    c.model.representation_size = 64
    c.model.head_channels = 32
    c.model.num_vertices = 16
    c.model.refine_stages = 1
    c.loss.raster_size = 24
    c.loss.max_polygon_rois_per_image = 8
    c.data.crop_size = 96
    return c


@pytest.fixture
def synthetic_coco(tmp_path):
    return write_synthetic_coco(tmp_path / "data")


# The modules that take longest under two workers (bash scripts/test.sh --durations=25), handed out first so that
# both workers finish at about the same time; the others keep their order.
LONGEST_FIRST = ("test_napari", "test_finetune", "test_train", "test_learning", "test_large_images", "test_reliability",
                 "test_weights", "test_zoom_fit", "test_cli", "test_package")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(getattr(getattr(item, "module", None), "__name__", ""), len(rank)))
