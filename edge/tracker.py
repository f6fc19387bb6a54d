"""Stable track ids across frames: ByteTrack from Roboflow's ``supervision``.

``supervision`` 0.30 is pinned: 0.31 moved ByteTrack to the ``trackers``
package, which requires the GUI build ``opencv-python`` (it clashes with the
headless build an edge box runs, and needs libGL). Only this module knows
which library tracks, so the swap is local once that changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from edge.detector import Detections

with warnings.catch_warnings():
    # 0.30 announces ByteTrack's move to `trackers`; see the module docstring.
    warnings.simplefilter("ignore", FutureWarning)
    import supervision as sv


@dataclass(frozen=True)
class TrackedObject:
    """A confirmed track in one frame."""

    track_id: int
    class_id: int
    confidence: float
    xyxy: tuple[float, float, float, float]

    def anchor(self, width: int, height: int) -> tuple[float, float]:
        """Bottom centre (where the object stands), as fractions of the frame."""
        x1, _, x2, y2 = self.xyxy
        return ((x1 + x2) / 2 / width, y2 / height)


class Tracker:
    """Associates detections over frames; reports only confirmed tracks."""

    def __init__(
        self, fps: float, *, activation: float = 0.4, min_hits: int = 3, lost_s: float = 3.0, match_cost: float = 0.8,
    ) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self._tracker = sv.ByteTrack(
                track_activation_threshold=activation,
                # ByteTrack counts its lost-track buffer in frames at 30 fps
                # (it keeps a track fps / 30 * buffer frames); in seconds it
                # holds at any detection rate.
                lost_track_buffer=round(lost_s * 30),
                minimum_matching_threshold=match_cost,
                frame_rate=fps,
                minimum_consecutive_frames=min_hits,
            )

    def update(self, detections: Detections) -> list[TrackedObject]:
        tracked = self._tracker.update_with_detections(
            sv.Detections(
                xyxy=detections.xyxy.astype(np.float32),
                confidence=detections.confidence.astype(np.float32),
                class_id=detections.class_id.astype(int),
            )
        )
        if tracked.tracker_id is None or tracked.class_id is None or tracked.confidence is None:
            return []
        return [
            TrackedObject(int(tid), int(cid), float(conf), tuple(float(v) for v in box))  # type: ignore[arg-type]
            for tid, cid, conf, box in zip(tracked.tracker_id, tracked.class_id, tracked.confidence, tracked.xyxy)
            if tid >= 0
        ]

    def reset(self) -> None:
        self._tracker.reset()
