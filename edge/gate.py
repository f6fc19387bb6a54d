"""Motion gate: a cheap low-resolution check that decides whether to run the detector."""

from __future__ import annotations

import cv2
import numpy as np


class MotionGate:
    """True for frames that moved since the last one, or every ``max_interval`` frames.

    Still objects are refreshed by ``max_interval``, so a parked car or a
    person standing still keeps its track.
    """

    def __init__(self, width: int = 160, threshold: int = 25, min_area: float = 0.002, max_interval: int = 10) -> None:
        self.width = width
        self.threshold = threshold
        self.min_area = min_area
        self.max_interval = max_interval
        self._previous: np.ndarray | None = None
        self._since = 0

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        height = max(1, round(h * self.width / w))
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        return cv2.GaussianBlur(cv2.resize(gray, (self.width, height), interpolation=cv2.INTER_LINEAR), (5, 5), 0)

    def moved_fraction(self, frame: np.ndarray) -> float:
        """Share of low-resolution pixels that changed since the previous frame."""
        small = self._small(frame)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return 1.0
        return float(np.count_nonzero(cv2.absdiff(small, previous) > self.threshold)) / small.size

    def reset(self) -> None:
        """Forget the previous frame: the next one runs the detector."""
        self._previous = None
        self._since = 0

    def should_detect(self, frame: np.ndarray) -> bool:
        moved = self.moved_fraction(frame) >= self.min_area
        self._since += 1
        if moved or self._since >= self.max_interval:
            self._since = 0
            return True
        return False
