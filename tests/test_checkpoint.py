
import numpy as np
import pytest
import torch

from napari_cellboxify.checkpoint import CheckpointError, load_model, save_weights
from napari_cellboxify.model import build_model

from conftest import tiny_config


@pytest.fixture
def weights(tmp_path):
    c = tiny_config()
    m = build_model(c)
    path = tmp_path / "model.pt"
    save_weights(path, m, c)
    return path, m, c


def test_round_trip_rebuilds_the_same_model(weights):
    path, m, _ = weights
    loaded, data = load_model(path)
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b)


def test_half_precision_weights_load(tmp_path, weights):
    _, m, c = weights
    path = tmp_path / "half.pt"
    save_weights(path, m, c, half=True)
    loaded, _ = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float32
    assert path.stat().st_size < 0.6 * (tmp_path / "model.pt").stat().st_size


def test_truncated_file_is_refused(weights):
    path, _, _ = weights
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)


def test_wrong_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a weights file"):
        load_model(path)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a CellBoxify weights file"):
        load_model(tmp_path / "other.pt")


def test_random_bytes_and_a_plain_pickle_get_one_line_and_no_torch_notes(tmp_path, recwarn):
    import pickle

    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(1 << 20))
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump({"model": {}, "config": {}}, handle)
    for name in ("random.pt", "plain.pkl"):
        with pytest.raises(CheckpointError) as info:
            load_model(tmp_path / name)
        message = str(info.value)
        assert "not a weights file" in message and "\n" not in message and "PyTorch 2.6" not in message
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


@pytest.mark.parametrize("damage, says", [
    (lambda state: {k: 1 for k in state}, "is of type int, not a tensor"),
    (lambda state: list(state.values()), "are a list, not named tensors"),
    (lambda state: {i: v for i, v in enumerate(state.values())}, "a weight is named 0"),
])
def test_a_weights_file_with_damaged_tensors_is_named_as_damaged(tmp_path, weights, damage, says):
    path, _, _ = weights
    data = torch.load(path, weights_only=True)
    data["model"] = damage(data["model"])
    torch.save(data, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="damaged") as info:
        load_model(tmp_path / "damaged.pt")
    assert says in str(info.value)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/cellboxify_pwned",))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    import os

    marker = "/tmp/cellboxify_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "cellboxify", "model": _Evil(), "config": {}}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="could run code"):
        load_model(path)
    assert not os.path.exists(marker)


def test_config_mismatch_names_the_difference(weights):
    path, _, c = weights
    other = tiny_config()
    other.model.fpn_channels = 64
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path, config=other)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_overrides_change_inference_settings_but_not_the_architecture(weights):
    from napari_cellboxify.config import ConfigError

    path, m, _ = weights
    loaded, _ = load_model(path, overrides=["model.image_scale=0.5", "model.box_nms_thresh=0.6"])
    assert loaded.transform.image_scale == 0.5 and loaded.roi_heads.nms_thresh == 0.6
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path, overrides=["model.fpn_channels=64"])
    with pytest.raises(ConfigError, match="image_scale"):
        load_model(path, overrides=["model.image_scale=0"])
