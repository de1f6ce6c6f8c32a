"""Write a benchmark's figures into benchmarks/RESULTS.md, in its own section, with machine, command and date."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parents[1]
HEADER = "# Benchmark results\n\nEach section is written by the script named in it; rerun the command to refresh it.\n"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores ({threads} torch threads){gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def provenance() -> str:
    """When and from which commit a point was measured (points are cached across commits and runs)."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    cpu = machine().split(";")[0]  # the CPU sets a timed run's reach and a figure's seconds
    return f"{stamp}, commit {commit}{' + uncommitted src changes' if dirty else ''}, {cpu}"


def write_section(name: str, body: str, first: bool = False) -> None:
    """Replace section ``name`` of RESULTS.md (or add it: at the end, or right under the header when ``first``)."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    command = "python " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])  # quoted: a copy-paste runs it
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- {name} -->\n## {name}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n"
               f"{body.strip()}\n<!-- /{name} -->\n")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif first and text.startswith(HEADER):
        text = HEADER + "\n" + section + "\n" + text[len(HEADER):].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)
    print(section)


def shown(path: Path) -> str:
    """A path as the reader's command would spell it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


LIVECELL_MINI = REPO.parent / "shared" / "data" / "livecell-mini"


def livecell_mini_args(parser) -> None:
    """The two options every livecell-mini benchmark takes: ``--weights`` and ``--data``."""
    parser.add_argument("--weights", type=Path, help="weights (default: the shipped weights)")
    parser.add_argument("--data", type=Path, default=LIVECELL_MINI, help="folder with train/ and val/")


def livecell_mini_missing(data: Path) -> bool:
    """True, after saying why the benchmark is skipped, when ``data`` has no livecell-mini train split."""
    if (Path(data) / "train" / "annotations.json").exists():
        return False
    print(f"skipped: {data} not found (see ../shared/data/README.md)")
    return True


def livecell_mini_splits(data: Path, splits=("train", "val")) -> dict:
    """``{split: (CocoFile, [image, ...])}`` for livecell-mini's splits, images read once for every setting."""
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image

    out = {}
    for split in splits:
        coco = load_coco(Path(data) / split / "annotations.json", Path(data) / split / "images")
        out[split] = (coco, [read_image(entry.path) for entry in coco.images])
    return out


def segment_timed(predictor, images, zooms=None) -> tuple[list, list[float]]:
    """Segment each image (score >= 0.05): the predictions and the seconds ``segment_image`` alone took on each.

    ``zooms``, one per image, segments each at its own ``image_scale`` (e.g. the zoom fitted to its boxes); the
    predictor's zoom is left as it was.
    """
    own = getattr(predictor, "image_scale", None)
    predictions, seconds = [], []
    try:
        for i, image in enumerate(images):
            if zooms is not None:
                predictor.image_scale = zooms[i]
            start = time.perf_counter()
            predictions.append(predictor.segment_image(image, score_threshold=0.05))
            seconds.append(time.perf_counter() - start)
    finally:
        if zooms is not None:
            predictor.image_scale = own
    return predictions, seconds


def segm_ap_per_type(metrics: dict) -> str:
    """``evaluate_detections``' segm AP per cell type as one table cell: ``A172 10.2, BT474 20.7, ...``."""
    return ", ".join(f"{k} {v['segm_AP']:.1f}" for k, v in metrics["per_cell_type"].items())


def zooms_by_image(entries, zooms) -> str:
    """Each image's zoom as one table cell, the image named by its cell type: ``A172 1.25, SKOV3 1.5, ...``."""
    return ", ".join(f"{Path(entry.file_name).name.split('_')[0]} {zoom:g}" for entry, zoom in zip(entries, zooms))
