import pytest
import torch

from napari_cellboxify.config import ConfigError
from napari_cellboxify.ema import warmed_decay, weight_average

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

