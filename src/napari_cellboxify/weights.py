"""The default weights shipped in ``weights/``: where they are, and a sha256 check before loading.

``weights/README.md`` (the model card) lists ``sha256: <hex>  <file>`` for each shipped file; a file whose
hash differs (changed, truncated) is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

DEFAULT_WEIGHTS_NAME = "cellboxify_livecell_boxes.pt"
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
    """The verified default weights, or a clear error saying none are installed."""
    for folder in weights_dirs():
        candidate = folder / DEFAULT_WEIGHTS_NAME
        if candidate.exists():
            verify(candidate)
            return candidate
    raise WeightsError(
        "no default weights are installed yet (looked in "
        + ", ".join(str(d) for d in weights_dirs())
        + "); pass --weights FILE (a model.pt from `cellboxify train`)"
    )
