"""CPU per stage of a camera's frame loop: where an edge box's cores go.

Each stage adds the CPU time of the thread that runs it (``time.thread_time``),
so waiting for a core or for a turn at the shared model costs a stage
nothing: summed over a box's cameras, the figures are what the box spends.
Inference is the caller thread's own work only when the model runs on one
thread (``model.threads: 1``, as a site sets it); with a pool, its other
threads' share shows in the process's CPU, not here. Decoding runs in the
capture thread and is counted there (``bench/edge_capacity.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("gate", "preprocess", "inference", "nms", "tracking", "scene", "outbox")


class StageClock:
    """Thread CPU seconds per stage, added up since the start."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.cpu_s[stage] += time.thread_time() - started

    def snapshot(self) -> dict[str, float]:
        return dict(self.cpu_s)
