"""Stopwatches that live beside the counters they go with (denoiser evals, decodes, reward queries).

A model call on a GPU returns before the device has finished; a stopwatch on a CUDA device synchronizes at both
ends, so its seconds are the call's real duration (the cost of the sync is part of what a user waits for anyway).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class Stopwatch:
    """Accumulated seconds and number of timed calls of one kind of model call."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.seconds = 0.0
        self.calls = 0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0
