"""Hands a loaded model to the video thread between two frames and keeps it
on probation, rolling back on an error or a slowdown (see edge/updater.py)."""

from __future__ import annotations

import logging
import statistics
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge.detector import ObjectDetector
from schemas.rollout import DesiredModel

log = logging.getLogger("fleetsight.updater")


@dataclass
class _Candidate:
    detector: ObjectDetector
    desired: DesiredModel


class ModelSwitch:
    """Hands a loaded model to the video thread and watches it on probation.

    ``current``, ``observe`` and ``roll_back`` are called by the video thread
    only; ``offer`` by any thread. ``on_outcome(desired, kept, reason)`` is
    called from the video thread.
    """

    def __init__(
        self, detector: ObjectDetector, probation_frames: int, max_slowdown: float,
        on_outcome: Callable[[DesiredModel, bool, str], None] = lambda d, ok, why: None,
    ) -> None:
        self.detector = detector
        self.probation_frames = probation_frames
        self.max_slowdown = max_slowdown
        self.on_outcome = on_outcome
        self._lock = threading.Lock()
        self._offered: _Candidate | None = None
        self._cancel: str | None = None
        self._trial: _Candidate | None = None
        self._previous: ObjectDetector | None = None
        self._recent: deque[float] = deque(maxlen=50)
        self._baseline = 0.0
        self._runs: list[float] = []

    @property
    def on_probation(self) -> bool:
        return self._trial is not None

    def offer(self, detector: ObjectDetector, desired: DesiredModel) -> None:
        with self._lock:
            self._offered = _Candidate(detector, desired)

    def cancel(self, reason: str) -> None:
        """Drop a model offered or on probation (a newer instruction wants the running one)."""
        with self._lock:
            self._offered, self._cancel = None, reason

    def current(self) -> ObjectDetector:
        """The detector for the next frame (a model offered since is swapped in here)."""
        with self._lock:
            offered, self._offered = self._offered, None
            cancel, self._cancel = self._cancel, None
        if cancel is not None and self._trial is not None:
            self.roll_back(cancel)
        if offered is not None:
            if self._trial is not None:  # superseded while on probation: compare with the model kept before it
                self.on_outcome(self._trial.desired, False, f"superseded by {offered.desired.version}")
            else:
                self._previous = self.detector
                self._baseline = statistics.median(self._recent) if self._recent else 0.0
            self._trial, self._runs = offered, []
            self.detector = offered.detector
            log.info("now running %s (on probation for %d detector runs)", offered.desired.version, self.probation_frames)
        return self.detector

    def observe(self, elapsed_s: float) -> ObjectDetector:
        """Record one inference time; returns the detector to keep using."""
        if self._trial is None:
            self._recent.append(elapsed_s)
            return self.detector
        self._runs.append(elapsed_s)
        if len(self._runs) < self.probation_frames:
            return self.detector
        median = statistics.median(self._runs)
        if self._baseline and median > self.max_slowdown * self._baseline:
            return self.roll_back(
                f"median inference {median * 1000:.0f} ms against {self._baseline * 1000:.0f} ms before "
                f"(limit {self.max_slowdown:g}x)"
            )
        trial, self._trial, self._previous = self._trial, None, None
        self._recent.clear()
        self._recent.extend(self._runs)
        self.on_outcome(trial.desired, True, f"median inference {median * 1000:.0f} ms")
        return self.detector

    def roll_back(self, reason: str) -> ObjectDetector:
        """Put the model from before the trial back."""
        assert self._trial is not None and self._previous is not None
        trial, self._trial = self._trial, None
        self.detector, self._previous = self._previous, None
        log.warning("rolled back from %s: %s", trial.desired.version, reason)
        self.on_outcome(trial.desired, False, reason)
        return self.detector
