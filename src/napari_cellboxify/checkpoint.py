"""Checkpoints and weight files: saved atomically, loaded with ``weights_only=True``, refused with a clear message.

Two kinds, one format family:
- a training checkpoint (``last.pt``): model, optimiser, scheduler, grad scaler, config, step, RNG state;
- a weights file (``model.pt``, shipped weights): model (optionally half precision) and config.
Both carry ``format = "cellboxify"`` and the config, so either rebuilds its own model.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import CellBoxifyConfig, ConfigError
from .io_utils import atomic_write_bytes

FORMAT = "cellboxify"


class CheckpointError(RuntimeError):
    """A weights/checkpoint file that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Serialise to memory first, then publish atomically: a crash never leaves a half-written file."""
    payload = {"format": FORMAT, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_weights(path: str | Path, model: torch.nn.Module, config: CellBoxifyConfig, half: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_checkpoint(path, {"kind": "weights", "model": state, "config": config.to_dict(), **(extra or {})})


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a weights file, got a folder: {path}")
    # torch.save has written zip archives since PyTorch 1.6, and every file of this package is one: anything
    # else (random bytes, a plain pickle) is refused before the unpickler sees it and adds its own notes.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a weights file (not a complete PyTorch archive: truncated or corrupt, "
                              "or not written by torch.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes say nothing a user can act on
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                       if line.startswith("WeightsUnpickler error:")), "")
        raise CheckpointError(f"refused to load {path}: it contains Python objects that could run code"
                              + (f" ({detail})" if detail else "")) from None
    except Exception as exc:  # torch.load raises many types on garbage (KeyError, RuntimeError, EOFError, ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch file (truncated or corrupt?): {first}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "model" not in data or "config" not in data:
        raise CheckpointError(f"{path} is not a CellBoxify weights file (no model/config inside)")
    state = data["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is damaged: its weights are a {type(state).__name__}, not named tensors")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path} is damaged: a weight is named {key!r}, not by its layer")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} is damaged: weight {key!r} is of type {type(value).__name__}, not a tensor")
    return data


def config_from_checkpoint(data: dict[str, Any], path: str | Path = "") -> CellBoxifyConfig:
    try:
        return CellBoxifyConfig.from_dict(data["config"])
    except ConfigError as exc:
        raise CheckpointError(f"the config stored in {path or 'the weights'} is not usable: {exc}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", config: CellBoxifyConfig | None = None,
               overrides: list[str] | None = None):
    """Rebuild the model a weights file/checkpoint describes and load its weights (eval mode).

    ``config`` may override inference-only settings; its architecture must match the file's. ``overrides``
    (``["model.image_scale=0.5"]``, see ``config.apply_overrides``) change single values of the file's config
    (or of ``config``), e.g. the zoom for images at another magnification than the training data's.
    """
    from .model import build_model

    data = read_checkpoint(path)
    config = _config_for(data, path, config, overrides)
    model = build_model(config, load_pretrained=False)
    load_state(model, data["model"], path)
    return model.to(device).eval(), data


def check_overrides(path: str | Path, overrides: list[str]) -> None:
    """Raise the error ``load_model(path, overrides=overrides)`` would raise about the overrides, without building
    the model: a verb that does other work first (choosing among files) refuses bad settings at once."""
    _config_for(read_checkpoint(path), path, None, overrides)


def _config_for(data: dict, path: str | Path, config: CellBoxifyConfig | None,
                overrides: list[str] | None) -> CellBoxifyConfig:
    from .config import apply_overrides

    stored = config_from_checkpoint(data, path)
    if overrides:
        config = apply_overrides(config or stored, overrides)
    if config is not None and _architecture(config) != _architecture(stored):
        raise CheckpointError(
            f"config does not match the weights in {path}: the file was trained with "
            f"{_architecture(stored)}, the config asks for {_architecture(config)}"
        )
    return config or stored


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path = "") -> None:
    reference = model.state_dict()
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    wrong = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong))
            if keys
        )
        raise CheckpointError(f"weights in {path or 'the file'} do not fit this model ({detail})")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})


def _architecture(config: CellBoxifyConfig) -> dict[str, Any]:
    m = config.model
    return {
        "backbone": m.backbone,
        "norm": m.norm,
        "fpn_channels": m.fpn_channels,
        "representation_size": m.representation_size,
        "num_vertices": m.num_vertices,
        "refine_stages": m.refine_stages,
        "head_channels": m.head_channels,
        "anchors": (tuple(m.anchor_sizes), tuple(m.aspect_ratios)),
    }
