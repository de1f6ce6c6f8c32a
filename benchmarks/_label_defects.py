"""Scored images whose labels do not sit on their cells: every benchmark leaves them out of its scoring.

``sartorius-2021/original`` afbcea22fc2a (cortical neurons, 30 cells; its pixels are a third-party sample image
that was matched to its labels by texture, sartorius-2021/PROVENANCE.md): the outlines of both shipped phase-contrast
files, trained apart, sit 4.6-4.9 px right of its labels, against at most 0.5 px on each of the five other
exact-label Sartorius images, and a model-free fit (the shift that puts the labels on the most image texture) moves them 4 px
right (docs/experiments/2026-12-07-misregistered-cortical-labels.md). On cells of 13-21 px a 5 px offset keeps any
outline below IoU 0.5 with its label: `neurons` scored segm AP 0.6 there against 37.6 on the other cortical image.
"""

from __future__ import annotations

MISREGISTERED = ("afbcea22fc2a",)


def registered(file_name: str) -> bool:
    """False for an image whose labels are offset from its cells (``MISREGISTERED``)."""
    return not file_name.startswith(MISREGISTERED)
