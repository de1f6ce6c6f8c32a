"""How inference time and peak memory grow with the number of cells and with the image size.

- cells: one 1408x1040 synthetic phase-contrast image (2x2 LIVECell fields) with N GT boxes, N = 50 ... 2,000,
  segmented box by box (``Predictor.segment_boxes``: backbone once + polygon head + mask pasting per cell). This
  isolates the part that scales with cells; the backbone/RPN cost is the N-independent intercept.
- image size: square synthetic images 512 ... 4096 px at LIVECell's cell density, segmented end to end
  (``segment_tiled``, 704 px tiles with 64 px overlap, the CLI's default tiling).

Each point runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own; on CUDA the
peak allocated GPU memory is reported too. Random weights with the score threshold at 0, so that every point emits
as many instances as it is allowed: the cell points get exactly one per box; the size points cap detections per
704 px tile at 1.5x LIVECell's mean density (635), a busy field. Time depends on how many instances come out,
not on what the weights are.

    python benchmarks/bench_scaling.py [--cells 50,250,500,1000,2000] [--sizes 512,1024,2048,4096] [--device cpu]

Writes a table into benchmarks/RESULTS.md and a plot to benchmarks/scaling.png.

- image side, end to end (``--sides 2048,5000,10000,20000``): ``cellboxify predict`` with the shipped weights
  (label TIFF, COCO, CSV) on a slide-scan-like 8-bit TIFF (tiled, zlib) of side S: a blank field holding the
  same four LIVECell val fields (704x520) wherever S is, so that the cells stay the same and only the image
  grows. Peak RSS and wall time of the whole command, each side in a fresh process; section "Peak memory
  against image side", plot scaling_sides.png. Needs ../shared/data/livecell-mini.

    python benchmarks/bench_scaling.py --sides 2048,5000,10000,20000 --cells "" --sizes ""
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
DENSITY = 313 / (704 * 520)  # LIVECell's mean cells per pixel


def _point(kind: str, value: int, backbone: str, device: str) -> dict:
    """Measured in this (fresh) process: seconds (median of 2, or 1 run for >= 2048 px, after a warm-up) and peak
    memory."""
    import torch

    from napari_cellboxify.config import CellBoxifyConfig
    from napari_cellboxify.data.synthetic import synthetic_cells
    from napari_cellboxify.model import build_model
    from napari_cellboxify.predict import Predictor

    config = CellBoxifyConfig()
    config.model.backbone = backbone
    config.model.pretrained_backbone = False
    torch.manual_seed(0)
    model = build_model(config, load_pretrained=False)
    predictor = Predictor(model, device=device, score_threshold=0.0)
    if kind == "cells":
        synth = synthetic_cells((1040, 1408), n_cells=value, radius_range=(5.0, 12.0), seed=0)
        boxes = np.asarray(synth.boxes_xyxy, np.float32)
        run = lambda: predictor.segment_boxes(synth.image, boxes)  # noqa: E731
        count = len(boxes)
    else:
        n = int(DENSITY * value * value)
        synth = synthetic_cells((value, value), n_cells=n, radius_range=(6.0, 14.0), seed=0)
        model.roi_heads.detections_per_img = max(1, int(DENSITY * 704 * 704 * 1.5))
        run = lambda: predictor.segment_tiled(synth.image, tile=704, overlap=64)  # noqa: E731
        count = len(synth.boxes_xyxy)
    # Warm-up (allocator, kernels) on one tile's worth for the big images: a full 4096^2 pass takes minutes on a
    # CPU and its 49 tiles warm each other anyway, so it is timed once; the small points take the median of 2.
    if kind == "size" and value > 704:
        predictor.segment_tiled(synth.image[:704, :704], tile=704, overlap=64)
    else:
        run()
    repeats = 1 if kind == "size" and value >= 2048 else 2
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"kind": kind, "value": value, "cells": count, "instances": len(out), "seconds": float(np.median(times)),
            "repeats": repeats,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mb": gpu}


def _growth(xs, ys) -> float:
    """Exponent b of y ~ x^b from a log-log least-squares line (1 = linear)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="50,250,500,1000,2000")
    parser.add_argument("--sizes", default="512,1024,2048,4096")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", default="", help="end-to-end predict on scans of these sides (px)")
    parser.add_argument("--point", nargs=2, metavar=("KIND", "VALUE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:  # child mode: one measurement, JSON on stdout
        print(json.dumps(_point(args.point[0], int(args.point[1]), args.backbone, args.device)))
        return 0

    if args.sides:
        sides = [int(v) for v in args.sides.split(",") if v]
        if not _sides(sides):
            return 1
        if not (args.cells or args.sizes):
            return 0
    rows = []
    for kind, values in (("cells", args.cells), ("size", args.sizes)):
        for value in [int(v) for v in values.split(",") if v]:
            cmd = [sys.executable, __file__, "--point", kind, str(value), "--backbone", args.backbone,
                   "--device", args.device]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)

    lines = [f"Random-weight {args.backbone}-FPN CellBoxify on {args.device}; each point in a fresh process.", ""]
    for kind, label in (("cells", "N GT boxes on a 1408x1040 image (segment_boxes)"),
                        ("size", "square image, LIVECell density, tiled 704/64 (segment_tiled)")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        lines += [f"**{label}**", "", "| x | cells | instances | seconds | runs | peak RSS MB | peak GPU MB |",
                  "|---|---|---|---|---|---|---|"]
        for r in sel:
            gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
            lines.append(f"| {r['value']} | {r['cells']} | {r['instances']} | {r['seconds']:.2f} | "
                         f"{r.get('repeats', 2)} | {r['peak_rss_mb']:.0f} | {gpu} |")
        if len(sel) >= 2:
            x = [r["cells"] if kind == "cells" else r["value"] ** 2 for r in sel]
            seconds = [r["seconds"] for r in sel]
            slope, intercept = np.polyfit(x, seconds, 1)
            # The log-log slope says how it grows; the straight-line fit says what it costs (a fixed part for
            # the backbone/RPN, and a part per cell or per pixel).
            cost = (f"about {intercept:.1f} s + {slope * 1000:.2f} ms per cell" if kind == "cells"
                    else f"about {slope * 1e6:.1f} s per megapixel")
            lines += ["", f"time grows as x^{_growth(x, seconds):.2f} in "
                      f"{'cells' if kind == 'cells' else 'pixels'} (log-log slope; 1 = linear), {cost}; peak RSS "
                      f"as x^{_growth(x, [r['peak_rss_mb'] for r in sel]):.2f}.", ""]
    # One plot per device, so that the GPU run leaves the CPU figure in place.
    png = "scaling.png" if args.device == "cpu" else f"scaling_{args.device}.png"
    _plot(rows, HERE / png)
    lines.append(f"Plot: [{png}]({png})")
    write_section(f"Scaling ({args.backbone}, {args.device})", "\n".join(lines))
    return 0


LIVECELL_VAL = HERE.parents[1] / "shared" / "data" / "livecell-mini" / "val" / "images"


def _scan(path: Path, side: int, fields: list[np.ndarray], tile: int = 512) -> None:
    """A blank side² 8-bit scan with ``fields`` pasted near its centre, written tile by tile (tiled, zlib)."""
    import tifffile

    canvas_h = sum(f.shape[0] for f in fields[:2]) + 64
    canvas_w = sum(f.shape[1] for f in fields[::2][:1]) * 2 + 64
    y0, x0 = max(0, side // 2 - canvas_h // 2), max(0, side // 2 - canvas_w // 2)
    spots = [(y0 + (i // 2) * (fields[0].shape[0] + 64), x0 + (i % 2) * (fields[0].shape[1] + 64)) for i in range(len(fields))]

    def tiles():
        for ty in range(0, side, tile):
            for tx in range(0, side, tile):
                out = np.zeros((tile, tile), np.uint8)
                for (fy, fx), field in zip(spots, fields):
                    a, b = max(ty, fy), min(ty + tile, fy + field.shape[0], side)
                    c, d = max(tx, fx), min(tx + tile, fx + field.shape[1], side)
                    if a < b and c < d:
                        out[a - ty:b - ty, c - tx:d - tx] = field[a - fy:b - fy, c - fx:d - fx]
                yield out

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(tile, tile), compression="zlib")


def _sides(sides: list[int]) -> bool:
    import tempfile

    from napari_cellboxify.data.images import read_image

    names = sorted(LIVECELL_VAL.glob("*.tif"))[:4] if LIVECELL_VAL.is_dir() else []
    if len(names) < 4:
        print(f"skipped: LIVECell val images not found at {LIVECELL_VAL}")
        return True
    fields = [read_image(n).astype(np.uint8) for n in names]
    code = ("import resource, sys, time; from napari_cellboxify.cli import main; t0 = time.perf_counter(); "
            "rc = main(sys.argv[1:]); print('POINT', time.perf_counter() - t0, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            path = Path(tmp) / f"scan_{side}.tif"
            _scan(path, side, fields)
            out = Path(tmp) / f"out_{side}"
            res = subprocess.run([sys.executable, "-c", code, "predict", str(path), "--out", str(out),
                                  "--format", "tiff,coco,csv"], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                return False
            seconds, rss = (float(v) for v in res.stdout.split("POINT")[-1].split())
            cells = re.search(r"(\d+) cell\(s\)", res.stdout).group(1)
            rows.append({"side": side, "seconds": seconds, "peak_rss_mb": rss, "cells": int(cells),
                         "file_mb": path.stat().st_size / 2**20})
            print(rows[-1], flush=True)
            path.unlink()
    lines = ["`cellboxify predict --format tiff,coco,csv` with the shipped weights on a blank 8-bit scan (tiled "
             "TIFF, zlib) holding the same four LIVECell val fields at every side: the cells stay, the image grows. "
             "Each side in a fresh process; peak RSS and wall time of the whole command (reading, tiles, label "
             "TIFF, COCO, CSV). Up to 2,048² an image is segmented whole (the network's own peak); past it in "
             "1,024 px tiles, blank tiles skipped. The cell counts differ because the contrast stretch is taken "
             "over the whole scan, of which the four fields are 37 % at 2,048² and 0.4 % at 20,000²: this measures "
             "memory and the cost of the blank area, not quality. A scan with cells everywhere runs the network on "
             "every tile: time then grows with the tiles (section \"Scaling\").", "",
             "| side (px) | megapixels | file MB | cells | seconds | peak RSS MB |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']:,} | {r['side'] ** 2 / 1e6:.0f} | {r['file_mb']:.1f} | {r['cells']} | "
                     f"{r['seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    if len(rows) >= 2:
        x = [r["side"] ** 2 for r in rows]
        lines += ["", f"peak RSS grows as pixels^{_growth(x, [r['peak_rss_mb'] for r in rows]):.2f}, time as "
                  f"pixels^{_growth(x, [r['seconds'] for r in rows]):.2f} (log-log slopes; 0 = flat, 1 = linear)."]
    _plot_sides(rows, HERE / "scaling_sides.png")
    lines += ["", "Plot: [scaling_sides.png](scaling_sides.png)"]
    write_section("Peak memory against image side", "\n".join(lines))
    return True


def _plot_sides(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sides = [r["side"] for r in rows]
    ax.plot(sides, [r["peak_rss_mb"] for r in rows], "s--", color="tab:red", label="peak RSS MB")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("peak RSS (MB)", color="tab:red")
    twin = ax.twinx()
    twin.plot(sides, [r["seconds"] for r in rows], "o-", label="seconds")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("seconds")
    ax.set_title("cellboxify predict on a scan, same cells")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, xlabel in ((axes[0], "cells", "cells (GT boxes)"), (axes[1], "size", "image side (px)")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        x = [r["cells"] if kind == "cells" else r["value"] for r in sel]
        ax.plot(x, [r["seconds"] for r in sel], "o-", label="seconds")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = min(r["seconds"] for r in sel), max(r["seconds"] for r in sel)
        if hi < 3 * lo:  # a flat curve: show at least a decade, so that 10 % noise does not read as a zigzag
            ax.set_ylim(lo / 3, hi * 3)
        twin = ax.twinx()
        twin.plot(x, [r["peak_rss_mb"] for r in sel], "s--", color="tab:red", label="peak RSS MB")
        if all(r["peak_gpu_mb"] is not None for r in sel):
            twin.plot(x, [r["peak_gpu_mb"] for r in sel], "^:", color="tab:green", label="peak GPU MB")
            twin.legend(loc="upper left")
        twin.set_ylabel("peak memory (MB)", color="tab:red")
        twin.set_ylim(bottom=0)  # from zero: a free axis turns 5 % noise into a zigzag
        ax.set_title("N boxes on one 1408x1040 image" if kind == "cells" else "square image, tiled 704/64")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
