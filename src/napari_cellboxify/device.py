"""Device choice: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """Return the device for ``requested`` (auto | cpu | cuda | mps); a clear error if it is not available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available (use --device cpu or auto)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was requested but Apple MPS is not available (use --device cpu or auto)")
    if requested not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"unknown device '{requested}' (auto, cpu, cuda or mps)")
    return torch.device(requested)


def autocast_enabled(device: torch.device, amp: bool) -> bool:
    """Mixed precision only on CUDA: CPU autocast slows these convolutions down and MPS support is partial."""
    return amp and device.type == "cuda"
