"""Outlining the user's boxes on large images: the whole image at once vs region by region, side by side.

*Segment my boxes* (``Predictor.segment_boxes``) ran the network over the whole image however few boxes it had.
On an image larger than ``window`` (2048 px) it now outlines the boxes of each 1024 px tile in a crop around
them (64 px of context). This measures, in one run:

- time and peak memory for 60 boxes on square synthetic images of 1024-8192 px, both ways, each point in a fresh
  process (its own peak RSS); the whole-image way is skipped where it would not fit in this machine's memory;
- what the crops cost in accuracy: the mean mask IoU of the outlines of every GT box of livecell-mini val with
  its cell (the oracle-box IoU), the whole 704x520 image at once against crops forced by a 256 px window.

The shipped weights (R18-GN trunk: GroupNorm statistics span the whole input, so a crop's outlines are not
identical to the whole image's, only as good).

    python benchmarks/bench_boxes_large.py [--sizes 1024,2048,4096,8192] [--whole-up-to 4096] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import LIVECELL_MINI, write_section  # noqa: E402

BOXES = 60


def _point(size: int, whole: bool, device: str) -> dict:
    from napari_cellboxify.data.synthetic import synthetic_cells
    from napari_cellboxify.predict import Predictor

    predictor = Predictor.from_weights(None, device=device)
    synth = synthetic_cells((size, size), n_cells=BOXES, seed=1)
    window = 10**9 if whole else 2048
    predictor.segment_boxes(synth.image[:256, :256], synth.boxes_xyxy[:0])  # warm-up: imports, allocator
    t0 = time.perf_counter()
    out = predictor.segment_boxes(synth.image, synth.boxes_xyxy, window=window)
    seconds = time.perf_counter() - t0
    return {"size": size, "whole": whole, "boxes": len(out), "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _oracle(device: str) -> dict[str, float]:
    import functools

    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.evaluate import oracle_box_iou
    from napari_cellboxify.predict import Predictor

    coco = load_coco(LIVECELL_MINI / "val" / "annotations.json", LIVECELL_MINI / "val" / "images")
    out = {}
    for name, window in (("whole image", 10**9), ("crops (256 px window)", 256)):
        predictor = Predictor.from_weights(None, device=device)
        # oracle_box_iou outlines each image's GT boxes with segment_boxes: bound here to this window
        predictor.segment_boxes = functools.partial(predictor.segment_boxes, window=window)
        iou = oracle_box_iou(predictor, coco)
        out[name], out["cells"] = iou["mean_iou_model"], iou["num_cells"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192")
    parser.add_argument("--whole-up-to", type=int, default=4096,
                        help="largest size run whole (8192 whole needs ~40 GB of memory on a CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:  # child mode: one measurement, JSON on stdout
        print(json.dumps(_point(int(args.point[0]), args.point[1] == "whole", args.device)))
        return 0

    rows = ["| image | boxes | whole image: s / peak RSS MB | region by region: s / peak RSS MB | time ratio |",
            "|---|---|---|---|---|"]
    for size in (int(v) for v in args.sizes.split(",") if v):
        measured = {}
        for way in ("whole", "regions"):
            if way == "whole" and size > args.whole_up_to:
                continue
            cmd = [sys.executable, __file__, "--point", str(size), way, "--device", args.device]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            measured[way] = json.loads(res.stdout.strip().splitlines()[-1])
        whole, regions = measured.get("whole"), measured["regions"]
        shown = f"{whole['seconds']:.1f} / {whole['peak_rss_mb']:.0f}" if whole else "not run (memory)"
        ratio = f"{regions['seconds'] / whole['seconds']:.2f}" if whole else "-"
        rows.append(f"| {size}² | {BOXES} | {shown} | {regions['seconds']:.1f} / {regions['peak_rss_mb']:.0f} "
                    f"| {ratio} |")
        print(rows[-1], flush=True)
    body = [f"The shipped weights on {args.device}, {BOXES} boxes on a square synthetic image, each point in a fresh "
            "process; images up to 2048 px are one region either way.", "", *rows]
    if (LIVECELL_MINI / "val" / "annotations.json").exists():
        oracle = _oracle(args.device)
        body += ["", f"Accuracy of the crops: oracle-box mean mask IoU over the {oracle['cells']} cells of "
                 "livecell-mini val, each 704x520 image whole against region by region (a 256 px window, so "
                 "every box is outlined in a crop):", "", "| outlines | mean mask IoU with the cell |", "|---|---|"]
        body += [f"| {name} | {value:.4f} |" for name, value in oracle.items() if name != "cells"]
    else:
        body += ["", f"Accuracy not measured: {LIVECELL_MINI} not found (see ../shared/data/README.md)."]
    write_section(f"Boxes on large images ({args.device})", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
