"""The weights shipped in ``weights/``: their names, where they are, and a sha256 check before loading.

Three files are shipped, each named for what it segments: ``cells`` (phase-contrast cells, LIVECell; the
default), ``nuclei`` (nuclei in fluorescence, DSB2018) and ``neurons`` (phase-contrast neuronal cultures,
Sartorius). Every verb's ``--weights`` and the panel take a name or a file; ``predict``, ``evaluate`` and
``fine-tune`` also ``auto``, their default, which chooses a name on the images (``flip_agreement``), and ``cells``
is what is loaded when nothing chooses (``None``, the panel at start). ``weights/README.md`` (the model
cards) lists ``sha256: <hex>  <file>`` for each shipped file; a file whose hash differs (changed, truncated) is
refused with a clear message.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

DEFAULT_WEIGHTS_NAME = "cellboxify_livecell_boxes.pt"
# name -> (file, what it is for): the names every --weights and the panel's model choice accept
SHIPPED = {
    "cells": (DEFAULT_WEIGHTS_NAME, "phase-contrast cells (LIVECell)"),
    "nuclei": ("cellboxify_nuclei_boxes.pt", "nuclei in fluorescence (DSB2018)"),
    "neurons": ("cellboxify_neurons_boxes.pt", "phase-contrast neuronal cultures (Sartorius)"),
}
DEFAULT = "cells"
PACKAGE_ROOT = Path(__file__).resolve().parent


class WeightsError(RuntimeError):
    pass


def weights_dirs() -> list[Path]:
    """Where shipped weights are looked for: $CELLBOXIFY_WEIGHTS_DIR, the repository's weights/, the package."""
    dirs = []
    if os.environ.get("CELLBOXIFY_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["CELLBOXIFY_WEIGHTS_DIR"]))
    dirs.append(PACKAGE_ROOT.parents[1] / "weights")  # a source checkout (editable install)
    dirs.append(PACKAGE_ROOT / "weights")  # an installed wheel that bundles them
    return dirs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(folder: Path, name: str) -> str | None:
    card = folder / "README.md"
    if not card.exists():
        return None
    match = re.search(rf"sha256:\s*([0-9a-f]{{64}})\s+{re.escape(name)}", card.read_text())
    return match.group(1) if match else None


def verify(path: Path) -> None:
    expected = expected_sha256(path.parent, path.name)
    if expected is None:
        raise WeightsError(f"no sha256 for {path.name} in {path.parent / 'README.md'}; refusing unverified weights")
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(
            f"{path} does not match its sha256 in weights/README.md (changed or truncated file): "
            f"expected {expected[:12]}…, got {actual[:12]}…"
        )


def default_weights_path() -> Path:
    """The verified default weights (``cells``), or a clear error saying none are installed."""
    return shipped_weights_path(DEFAULT)


def shipped_weights_path(name: str) -> Path:
    """The verified shipped file called ``name`` (``cells`` or ``nuclei``), or a clear error."""
    if name not in SHIPPED:
        raise WeightsError(f"no shipped weights are called {name!r} (choose {' or '.join(SHIPPED)}, or give a file)")
    file_name = SHIPPED[name][0]
    for folder in weights_dirs():
        candidate = folder / file_name
        if candidate.exists():
            verify(candidate)
            return candidate
    raise WeightsError(
        f"the {name!r} weights ({file_name}) are not installed (looked in "
        + ", ".join(str(d) for d in weights_dirs())
        + "); pass --weights FILE (a model.pt from `cellboxify train`)"
    )


def resolve_weights(spec: "str | Path | None") -> Path:
    """``None`` -> the default shipped file; ``"cells"`` / ``"nuclei"`` -> that shipped file (verified); else
    the path given (a file named like a shipped name is reached as ``./cells``)."""
    if spec is None:
        return default_weights_path()
    if isinstance(spec, str) and spec in SHIPPED:
        return shipped_weights_path(spec)
    return Path(spec)


def describe_weights(spec: "str | Path | None") -> str:
    """How a run names the weights it used: ``nuclei (weights/cellboxify_nuclei_boxes.pt)`` or the file."""
    name = DEFAULT if spec is None else spec if isinstance(spec, str) and spec in SHIPPED else None
    return f"{name} ({resolve_weights(name)})" if name else str(spec)
