"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Everything this package writes (checkpoints, exports, configs, metrics) goes through these helpers: the data is
written to a temporary file in the same folder, flushed to disk, and then moved over the target with
``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

# mkstemp creates files readable by their owner only (0600); a published file should get the mode that open()
# would have given it (0666 minus the umask), so that exports and weights in a shared lab folder are readable.
# The umask can only be read by setting it; this is done once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` keeps a file extension on the temporary file for writers that infer the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # make the bytes durable before the rename publishes them
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):  # e.g. file systems without POSIX modes
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, writer: Callable[[Path], None], suffix: str | None = None) -> None:
    """Call ``writer(tmp_path)`` and publish the result at ``path`` atomically."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)


def check_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder to write into (made later if missing), or a ValueError naming ``what`` when it or a
    folder above it is a file (mkdir would say only "[Errno 17] File exists" or "Not a directory"), or when
    nothing can be written there (read-only folder or file system): found now, not after a long run."""
    path = Path(path).expanduser()
    for folder in (path, *path.parents):
        if folder.exists():
            if folder == path and not folder.is_dir():
                raise ValueError(f"{what} {path} is a file; give a folder (it is made if missing)")
            if not folder.is_dir():
                raise ValueError(f"{what} {path} cannot be made: {folder} is a file")
            if not _writable(folder):
                where = "" if folder == path else f" ({folder} is read-only)"
                raise ValueError(f"{what} {path} is not writable{where}")
            break
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: tried, since permissions alone miss read-only mounts (and
    root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".cellboxify-write-check.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def remove_stale_temporaries(folder: str | Path, names: list[str]) -> list[Path]:
    """Delete temporary files that a killed writer left beside ``names`` in ``folder`` (SIGKILL skips cleanup).

    Only this module's own pattern (``.NAME.<random>.tmp``) is touched; returns what was removed.
    """
    folder = Path(folder)
    removed = []
    for name in names:
        for stale in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
                removed.append(stale)
    return removed
