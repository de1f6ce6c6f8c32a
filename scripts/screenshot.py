"""Screenshot of the CellBoxify panel on a real LIVECell val image with its predicted masks (docs/widget.png).

    xvfb-run -a python scripts/screenshot.py --out docs/widget.png [--weights FILE] [--image NAME]

Without --weights it uses the shipped default weights. ``--out`` has no default: the committed picture is
replaced only when asked for by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAL = REPO.parent / "shared" / "data" / "livecell-mini" / "val"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Take a screenshot of napari with the CellBoxify panel after Segment image on a LIVECell val "
        "image (what docs/widget.png shows). Needs a display: run it under xvfb-run -a.")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (docs/widget.png for the README's)")
    parser.add_argument("--weights", type=Path, help="weights file (default: the shipped weights)")
    parser.add_argument("--image", default="A172_Phase_C7_1_01d12h00m_3.tif",
                        help="file name in ../shared/data/livecell-mini/val/images (default: %(default)s)")
    args = parser.parse_args()

    import napari
    import napari._qt.qt_main_window as qt_main_window

    # napari 0.9 shows its PyQt5 deprecation notice as a toast over the canvas on first show; it says nothing
    # about the plugin. A private flag, so only this script touches it.
    qt_main_window.SHOW_QT_WARNING = False
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from napari_cellboxify._napari.widget import MASKS_LAYER, CellBoxifyWidget
    from napari_cellboxify.data.images import read_image

    viewer = napari.Viewer()
    viewer.window.resize(1600, 900)
    widget = CellBoxifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CellBoxify")
    if args.weights:
        widget.load_weights(args.weights)
    image = read_image(VAL / "images" / args.image)
    viewer.add_image(image, name=Path(args.image).stem)
    widget.segment_image()
    app = QApplication.instance()
    while not widget.segment_image_button.enabled:
        app.processEvents()
    viewer.layers[MASKS_LAYER].opacity = 0.5
    viewer.layers[MASKS_LAYER].contour = 0
    viewer.reset_view()
    app.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.out, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
