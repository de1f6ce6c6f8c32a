"""Terminal progress for the CLI (tqdm); the napari widget uses napari's own progress bar instead."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from tqdm import tqdm


class TqdmProgress:
    """A Trainer callback showing step, loss and learning rate."""

    def __init__(self, total: int, disable: bool = False):
        self.bar = tqdm(total=total, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True, disable=disable)

    def start_at(self, step: int) -> None:
        self.bar.n = step
        self.bar.refresh()

    def __call__(self, info) -> None:
        self.bar.n = info.step
        self.bar.set_postfix(loss=f"{info.loss:.3f}", lr=f"{info.lr:.1e}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def tqdm_callback(total: int, desc: str) -> Iterator[Callable[[int, int], None]]:
    """Yield a ``progress(done, total)`` function drawing a tqdm bar; a changed ``total`` (e.g. a stack found
    among the images, counting its planes) resizes the bar."""
    bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, new_total: int) -> None:
        bar.total = new_total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
