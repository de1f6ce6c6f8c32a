#!/usr/bin/env bash
# Set up everything napari-cellboxify needs on a fresh Debian/Ubuntu machine:
#  - apt packages for a headless X server with Mesa GL (xvfb; the napari tests need a real GL context),
#  - a virtual environment in .venv with the package (editable) and its test extras.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
libxcb-cursor0 libdbus-1-3 fonts-dejavu-core"

if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing apt packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
else
  echo "setup: no apt-get here; install Xvfb and Mesa GL yourself for the GUI tests" >&2
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import napari_cellboxify, torch, torchvision, napari, pytestqt, xdist" >/dev/null 2>&1; then
  echo "setup: installing the package and its dependencies into .venv (torch is large: minutes)"
  .venv/bin/python -m pip install -q -e ".[testing]"
fi
echo "setup: ready (.venv)"
