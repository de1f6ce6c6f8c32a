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
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--point", nargs=2, metavar=("KIND", "VALUE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:  # child mode: one measurement, JSON on stdout
        print(json.dumps(_point(args.point[0], int(args.point[1]), args.backbone, args.device)))
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
