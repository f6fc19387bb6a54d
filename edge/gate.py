"""Motion gate: a cheap low-resolution check that decides whether to run the detector."""

from __future__ import annotations

import cv2
import numpy as np

# Levels between the 1st and 99th percentile of a well-lit picture's grey
# values (PETS09 in daylight 176, MOT16-09 220): ``threshold`` is meant for
# such a picture and shrinks with a duller one.
FULL_CONTRAST = 200.0
# The threshold never goes below this many levels: after the blur, sensor
# noise at dusk and at night stays under it (a dusk picture's threshold is ~7).
MIN_THRESHOLD = 4.0


class MotionGate:
    """True for frames that moved since the detector last ran, or every ``max_interval`` frames.

    Still objects are refreshed by ``max_interval``, so a parked car or a
    person standing still keeps its track.

    Two things keep it from starving the detector in low light (seen: at
    dusk, a third of the light, 22 % of PETS09's frames at 10 fps passed a
    fixed threshold of 25 against 98 % in daylight, and the crossings came
    out 53 % short):

    - the threshold is scaled by the picture's contrast (the spread of its
      grey levels), so a person moving in a dim picture is motion as in a
      bright one;
    - motion is measured against the frame the detector last saw, not the
      previous frame, so a slow walker's small steps add up instead of each
      being too small on its own.
    """

    def __init__(self, width: int = 160, threshold: int = 25, min_area: float = 0.002, max_interval: int = 10) -> None:
        self.width = width
        self.threshold = threshold
        self.min_area = min_area
        self.max_interval = max_interval
        self._reference: np.ndarray | None = None  # what the detector last saw, small
        self._level = float(threshold)  # the motion threshold for that picture (worked out once per reference)
        self._since = 0

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        height = max(1, round(h * self.width / w))
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        return cv2.GaussianBlur(cv2.resize(gray, (self.width, height), interpolation=cv2.INTER_LINEAR), (5, 5), 0)

    def level(self, small: np.ndarray) -> float:
        """The difference in grey levels that counts as motion in this picture."""
        lo, hi = np.percentile(small, (1, 99))
        return max(MIN_THRESHOLD, self.threshold * min(1.0, float(hi - lo) / FULL_CONTRAST))

    def _moved(self, small: np.ndarray) -> float:
        """Share of low-resolution pixels that changed since the detector last ran."""
        reference = self._reference
        if reference is None or reference.shape != small.shape:
            return 1.0
        return float(np.count_nonzero(cv2.absdiff(small, reference) > self._level)) / small.size

    def reset(self) -> None:
        """Forget what the detector saw: the next frame runs it."""
        self._reference = None
        self._since = 0

    def should_detect(self, frame: np.ndarray) -> bool:
        small = self._small(frame)
        moved = self._moved(small) >= self.min_area
        self._since += 1
        if moved or self._since >= self.max_interval:
            self._since = 0
            self._reference, self._level = small, self.level(small)
            return True
        return False
