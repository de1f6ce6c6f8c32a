"""Responsiveness of napari while CellBoxify fine-tunes in the background: the longest event-loop stall.

A 10 ms QTimer runs in the Qt event loop while the panel fine-tunes on boxes of a LIVECell val image (or a
synthetic image when the data is absent); the longest gap between ticks minus 10 ms is the longest stall.

    xvfb-run -a python benchmarks/bench_responsiveness.py [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "livecell-mini" / "val"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0, help="the fine-tune's budget (default 1)")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_cellboxify._napari.widget import CellBoxifyWidget
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.shapes import boxes_to_rectangles

    if (VAL / "annotations.json").exists():
        coco = load_coco(VAL / "annotations.json", VAL / "images")
        entry = coco.images[0]
        image, boxes, what = read_image(entry.path), entry.boxes_xyxy, f"LIVECell `{entry.file_name}`"
    else:
        from napari_cellboxify.data.synthetic import synthetic_cells

        syn = synthetic_cells((520, 704), 150, seed=0)
        image, boxes, what = syn.image, syn.boxes_xyxy, "synthetic 704x520"

    viewer = napari.Viewer()
    widget = CellBoxifyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.add_image(image, name="cells")  # the panel has loaded the shipped weights
    widget.new_boxes_layer().add_rectangles(boxes_to_rectangles(boxes))
    widget.minutes_spin.value = args.minutes
    widget.project_edit.value = tempfile.mkdtemp(prefix="cellboxify-bench-")

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    app = QApplication.instance()
    t0 = time.perf_counter()
    widget.fine_tune()  # the click handler: reads the boxes, starts the worker and napari's progress bar
    click_ms = (time.perf_counter() - t0) * 1000
    timer.start(10)
    while widget.train_worker is not None:
        app.processEvents()
        time.sleep(0.001)
    wall = time.perf_counter() - t0
    timer.stop()
    gaps_ms = np.diff(ticks) * 1000 - 10
    body = "\n".join([
        f"Fine-tuning the shipped weights for {args.minutes:g} min ({len(boxes)} boxes on {what}) in a child "
        f"process that the panel's worker thread watches, {wall:.0f} s, nothing else running; a 10 ms QTimer in napari's event loop ticked {len(ticks)} times while it "
        f"ran. The click handler itself (read boxes, start the worker, napari's progress bar) took {click_ms:.0f} ms.",
        "",
        "| longest event-loop stall while training (ms) | 99th percentile (ms) | median (ms) | aim |",
        "|---|---|---|---|",
        f"| {gaps_ms.max():.1f} | {np.percentile(gaps_ms, 99):.1f} | {np.median(gaps_ms):.1f} | < 100 ms |",
    ])
    write_section("Responsiveness while fine-tuning (napari)", body)
    viewer.close()


if __name__ == "__main__":
    main()
