import hashlib

import pytest

from napari_cellboxify.weights import DEFAULT_WEIGHTS_NAME, WeightsError, default_weights_path


def _ship(folder, data: bytes, digest: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEFAULT_WEIGHTS_NAME).write_bytes(data)
    digest = digest or hashlib.sha256(data).hexdigest()
    (folder / "README.md").write_text(f"# card\n\nsha256: {digest}  {DEFAULT_WEIGHTS_NAME}\n")


def test_shipped_weights_are_found_and_verified(tmp_path, monkeypatch):
    _ship(tmp_path / "w", b"weights")
    monkeypatch.setenv("CELLBOXIFY_WEIGHTS_DIR", str(tmp_path / "w"))
    assert default_weights_path() == tmp_path / "w" / DEFAULT_WEIGHTS_NAME


def test_a_changed_or_truncated_file_is_refused(tmp_path, monkeypatch):
    _ship(tmp_path / "w", b"weights", digest=hashlib.sha256(b"other").hexdigest())
    monkeypatch.setenv("CELLBOXIFY_WEIGHTS_DIR", str(tmp_path / "w"))
    with pytest.raises(WeightsError, match="does not match its sha256"):
        default_weights_path()


def test_weights_without_a_listed_hash_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / DEFAULT_WEIGHTS_NAME).write_bytes(b"x")
    monkeypatch.setenv("CELLBOXIFY_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError, match="no sha256"):
        default_weights_path()
