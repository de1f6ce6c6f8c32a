import threading

import pytest
import torch

from napari_cellboxify.checkpoint import read_checkpoint
from napari_cellboxify.config import ConfigError
from napari_cellboxify.data.dataset import SyntheticSource
from napari_cellboxify.ema import warmed_decay, weight_average
from napari_cellboxify.train import Trainer

from conftest import tiny_config


def test_decay_warms_up_then_stays_at_the_configured_value():
    assert warmed_decay(0.998, 0) == pytest.approx(0.1)
    assert warmed_decay(0.998, 90) == pytest.approx(0.91)
    assert warmed_decay(0.998, 10_000) == 0.998
    assert all(warmed_decay(0.998, n) <= warmed_decay(0.998, n + 1) for n in range(6000))


def test_the_average_follows_the_exponential_moving_average_formula():
    model = torch.nn.Linear(3, 1)
    model.register_buffer("constant", torch.zeros(2))
    average = weight_average(model, decay=0.5)
    expected = None
    for step in range(5):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
            model.constant.fill_(float(step))
        average.update_parameters(model)
        # The first update copies; then the decay is min(0.5, (1 + n) / (10 + n)) after n updates.
        d = warmed_decay(0.5, step)
        expected = float(step + 1) if expected is None else d * expected + (1 - d) * (step + 1)
        assert torch.allclose(average.module.weight, torch.full_like(model.weight, expected))
        assert torch.equal(average.module.constant, model.constant)  # buffers are copied, not averaged
    assert expected != pytest.approx(5.0)  # the average lags the last weights


def test_weight_average_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="decay"):
        weight_average(torch.nn.Linear(2, 2), 1.0)
    config = tiny_config()
    config.train.ema_decay = 1.0
    with pytest.raises(ConfigError, match="ema_decay"):
        config.validate()


def _source(config):
    return SyntheticSource(config, shape=(96, 96), n_cells=6)


def test_trainer_ships_the_average_and_resumes_it_exactly(tmp_path):
    config = tiny_config(steps=6)
    config.train.ema_decay = 0.9
    full = Trainer(config, _source(config), tmp_path / "full")
    full.fit()
    shipped = read_checkpoint(tmp_path / "full" / "model.pt")["model"]
    average, last = full.ema.module.state_dict(), full.model.state_dict()
    assert all(torch.equal(shipped[k], average[k]) for k in average)
    assert any(not torch.equal(average[k], last[k]) for k in last)
    assert full.inference_model is full.ema.module

    cancel = threading.Event()
    Trainer(config, _source(config), tmp_path / "split", cancel=cancel,
            callbacks=[lambda info: cancel.set() if info.step == 3 else None]).fit()
    resumed = Trainer(config, _source(config), tmp_path / "split")
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    again = read_checkpoint(tmp_path / "split" / "model.pt")["model"]
    for key in shipped:
        torch.testing.assert_close(again[key], shipped[key], rtol=1e-5, atol=1e-6)
