#!/usr/bin/env bash
# Set everything up, then run the main job:
#  - with a display: napari opens with the CellBoxify panel on a sample image;
#  - without one: a headless `cellboxify predict` on a sample image, label TIFF + COCO + CSV into runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/python -m napari_cellboxify.demo --gui "$@"
fi
exec .venv/bin/python -m napari_cellboxify.demo --headless "$@"
