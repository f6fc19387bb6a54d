"""How much the people in view hide each other: the crowding signal.

Counting works from boxes, and a person mostly hidden behind another is a
box the detector rarely finds (on the shop front of the accuracy suite, 41 %
of the annotated people are less than half visible; every small detector
finds 19-36 % of those, against 79-91 % of the rest). So when the people a
camera sees overlap each other a lot, its counts run low, whatever the
tracker does. The signal is the share of person detections whose box lies
under another's, or covers it, by at least ``OVERLAP`` of its own area:
from high up people stand apart (the square: 0.06-0.09), at hip height
groups overlap (the shop front: about 0.35). Pure: the pipeline feeds it
each detector run's boxes and sends the counts in its health reports.
"""

from __future__ import annotations

import numpy as np

OVERLAP = 0.2  # share of a box's own area under another box that makes it "overlapping"
CROWDED = 0.2  # above this share of overlapping people, a camera's counts run low (README, "Where to mount a camera")


def overlapping(boxes: np.ndarray) -> int:
    """How many of these boxes (x1, y1, x2, y2) overlap another by at least ``OVERLAP`` of their own area."""
    if len(boxes) < 2:
        return 0
    b = boxes.astype(np.float64)
    w = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    under = w * h / area[:, None] >= OVERLAP  # row i: box i lies under box j by OVERLAP of its area or more
    np.fill_diagonal(under, False)
    return int((under.any(1) | under.any(0)).sum())


def crowding(overlapping_people: int, people: int) -> float | None:
    """The share of people seen overlapping another (None with nobody seen)."""
    return overlapping_people / people if people else None
