"""Packaging: the core imports without Qt, the manifest ships inside the package and validates."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


CORE = ["napari_cellboxify.model", "napari_cellboxify.losses", "napari_cellboxify.train", "napari_cellboxify.predict",
        "napari_cellboxify.evaluate", "napari_cellboxify.export", "napari_cellboxify.cli", "napari_cellboxify.data.coco"]


def test_core_imports_without_qt():
    # One fresh interpreter imports the core modules one by one; the first after which Qt or napari is loaded is
    # the one named (a fresh interpreter per module would cost ~4 s of torch imports each).
    code = (
        "import importlib, sys\n"
        f"for module in {CORE!r}:\n"
        "    importlib.import_module(module)\n"
        "    bad = sorted(m for m in sys.modules\n"
        "                 if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari'))\n"
        "    if bad:\n"
        "        print(module, 'imported', ','.join(bad[:5]))\n"
        "        break\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_manifest_at_root_is_the_one_in_the_package():
    root = (REPO / "napari.yaml").read_text()
    packaged = (REPO / "src" / "napari_cellboxify" / "napari.yaml").read_text()
    assert root == packaged


def test_npe2_validates_the_installed_manifest():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-cellboxify"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


@pytest.mark.slow
def test_non_editable_install_ships_the_manifest(tmp_path):
    """Build a wheel, install it into a folder, and validate its manifest with npe2 from there."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "napari_cellboxify/napari.yaml" in zf.namelist()
        assert zf.read("napari_cellboxify/napari.yaml").decode() == (REPO / "napari.yaml").read_text()
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr
    env = dict(os.environ, PYTHONPATH=str(target))  # the installed copy comes first on sys.path
    where = subprocess.run([sys.executable, "-c", "import napari_cellboxify; print(napari_cellboxify.__file__)"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-cellboxify", "--imports"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()
