"""Sample data: a synthetic phase-contrast-like image with its true instance labels."""

from __future__ import annotations

from ..data.synthetic import synthetic_cells


def synthetic_cells_sample():
    syn = synthetic_cells((384, 512), n_cells=60, radius_range=(8.0, 20.0), seed=2024)
    return [
        (syn.image, {"name": "synthetic cells"}, "image"),
        (syn.labels, {"name": "synthetic cells (true labels)", "visible": False}, "labels"),
    ]
