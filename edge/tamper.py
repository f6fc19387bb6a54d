"""Camera tamper checks: is the view moved, blocked or out of focus?

Cheap statistics of a 160-pixel-wide grey copy of one frame a second,
against a reference the node learns when it starts (the median of its first
samples, so people walking through do not end up in it). No pixels leave
the node; only the verdict does, in health events.

- ``blocked``: at least ``flat_cells`` of a 4x4 grid have lost their
  texture (standard deviation under a fifth of the reference's): a lens
  covered or sprayed, a box stacked in front. Checked first: a flat image
  has no meaningful shift or sharpness.
- ``moved``: phase correlation with the reference finds a shift of more than
  ``shift`` of the frame width (lines and zones no longer sit where drawn).
- ``defocused``: the cells' edge strength per unit of contrast (mean
  absolute Laplacian over standard deviation, so dimmer light is not blur)
  fell under ``blur`` of the reference's, in the median cell.

Measured on the sample clip (``tests/unit/test_tamper.py``): normal frames
over the whole clip shift at most 1.3 px of 160 and keep sharpness 1.0; a
25-pixel pan (of 768) measures 3.7-7.4 px; a Gaussian blur of sigma 3 keeps
0.46-0.49 of the sharpness (sigma 4: 0.35; dimming the light to 30 %: 1.02); a half-covered view has half its cells flat.

A verdict holds ``hold`` samples in a row before it is reported, and as long
to clear, so a bus driving past is not tampering. A camera moved on purpose
needs its lines redrawn and the node restarted, which learns a new
reference.
"""

from __future__ import annotations

import cv2
import numpy as np

WIDTH = 160
GRID = 4
KINDS = ("blocked", "moved", "defocused")


def _grey(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = grey.shape[:2]
    return cv2.resize(grey, (WIDTH, max(1, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA).astype(np.float32)


def _cells(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell: standard deviation and mean absolute Laplacian."""
    h, w = grey.shape
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    std, edge = [], []
    for y in range(GRID):
        for x in range(GRID):
            rows, cols = slice(y * h // GRID, (y + 1) * h // GRID), slice(x * w // GRID, (x + 1) * w // GRID)
            std.append(grey[rows, cols].std())
            edge.append(lap[rows, cols].mean())
    return np.asarray(std), np.asarray(edge)


class TamperCheck:
    """Feeds on frames, reports the tamper kinds that hold; see the module docstring."""

    def __init__(
        self, *, every_s: float = 1.0, learn: int = 5, hold: int = 3,
        shift: float = 0.02, flat_cells: float = 0.4, blur: float = 0.6,
    ) -> None:
        self.every_s = every_s
        self.learn = learn
        self.hold = hold
        self.shift = shift
        self.flat_cells = flat_cells
        self.blur = blur
        self.active: frozenset[str] = frozenset()
        self._samples: list[np.ndarray] = []
        self._reference: np.ndarray | None = None
        self._ref_std = self._ref_sharp = np.ones(GRID * GRID)
        self._window: np.ndarray | None = None
        self._next = float("-inf")
        self._streak: tuple[frozenset[str], int] = (frozenset(), 0)

    def due(self, now: float) -> bool:
        """Whether the frame at ``now`` should be looked at (one a second)."""
        return now >= self._next

    def observe(self, image: np.ndarray, now: float) -> bool:
        """Look at a frame if one is due; True if the reported kinds changed."""
        if not self.due(now):
            return False
        self._next = now + self.every_s
        grey = _grey(image)
        if self._reference is None:
            self._samples.append(grey)
            if len(self._samples) >= self.learn:
                self._set_reference(np.median(np.stack(self._samples), axis=0).astype(np.float32))
                self._samples = []
            return False
        seen = self.measure(grey)
        kinds, count = self._streak
        self._streak = (seen, count + 1) if seen == kinds else (seen, 1)
        if self._streak[1] >= self.hold and seen != self.active:
            self.active = seen
            return True
        return False

    def _set_reference(self, grey: np.ndarray) -> None:
        self._reference = grey
        std, edge = _cells(grey)
        self._ref_std = np.maximum(std, 1.0)
        self._ref_sharp = np.maximum(edge, 1e-3) / self._ref_std
        self._window = cv2.createHanningWindow((grey.shape[1], grey.shape[0]), cv2.CV_32F)

    def measure(self, grey: np.ndarray) -> frozenset[str]:
        """The kinds one grey sample shows against the reference (no hold)."""
        assert self._reference is not None
        std, edge = _cells(grey)
        flat = std < np.maximum(3.0, 0.2 * self._ref_std)
        if flat.mean() >= self.flat_cells:
            return frozenset({"blocked"})
        kinds = set()
        # OpenCV 5.0's phaseCorrelate multiplies its inputs by the window in
        # place (seen: the reference decayed a little on every call, and
        # still frames of the clip drifted into "moved"): it gets copies.
        (dx, dy), _ = cv2.phaseCorrelate(self._reference.copy(), grey.copy(), self._window)
        if np.hypot(dx, dy) > self.shift * WIDTH:
            kinds.add("moved")
        sharp = edge / np.maximum(std, 1.0)
        if float(np.median(sharp[~flat] / self._ref_sharp[~flat])) < self.blur:
            kinds.add("defocused")
        return frozenset(kinds)
