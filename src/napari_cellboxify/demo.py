"""The main job of ``scripts/run.sh``: napari with the CellBoxify panel, or a headless prediction.

``--gui``: open napari with the panel docked on a sample image (LIVECell from ../shared/data when present,
else the synthetic sample). ``--headless``: segment that image as ``cellboxify predict`` does by default (the
shipped file chosen for it, ``--weights auto``) and write a label TIFF, COCO and a CSV of measurements into
``runs/demo/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIVECELL_VAL = REPO.parent / "shared" / "data" / "livecell-mini" / "val" / "images"


def sample_image_path() -> Path | None:
    if LIVECELL_VAL.is_dir():
        images = sorted(LIVECELL_VAL.glob("*.tif"))
        return images[0] if images else None
    return None


def run_headless(out: Path) -> int:
    from .cli import main as cli_main

    path = sample_image_path()
    if path is None:
        import tifffile

        from .data.synthetic import synthetic_cells

        out.mkdir(parents=True, exist_ok=True)
        path = out / "synthetic_sample.tif"
        tifffile.imwrite(path, synthetic_cells((384, 512), 60, (8.0, 20.0), seed=2024).image)
    print(f"demo: segmenting {path}")
    # the demo's own folder: a second run replaces the first's outputs
    return cli_main(["predict", str(path), "--out", str(out), "--format", "tiff,coco,csv", "--overwrite"])


def run_gui() -> int:
    import napari

    viewer = napari.Viewer()
    path = sample_image_path()
    if path is not None:
        from .data.images import read_image

        viewer.add_image(read_image(path), name=path.stem)
    else:
        viewer.open_sample("napari-cellboxify", "synthetic_cells")
    viewer.window.add_plugin_dock_widget("napari-cellboxify", "CellBoxify")
    napari.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_cellboxify.demo")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gui", action="store_true")
    mode.add_argument("--headless", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    args = parser.parse_args(argv)
    return run_gui() if args.gui else run_headless(args.out)


if __name__ == "__main__":
    sys.exit(main())
