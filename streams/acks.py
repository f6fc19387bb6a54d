"""Per-camera ack watermarks: what an edge may delete from its outbox.

A camera's watermark W promises that every seq <= W is either in Kafka or was
given up by the edge itself (dropped from a full outbox). It only moves over
contiguous seqs, so a message lost between edge and bridge (a broker that
died with it in memory) holds W back until the edge resends it.

W starts from what the edge or an earlier bridge said (the retained outbox
head and ack messages), never from the first event seen: after a restart the
broker may hand over queued events before those retained messages arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Camera:
    watermark: int | None = None
    confirmed: set[int] = field(default_factory=set)  # seqs above watermark + 1

    def advance(self) -> None:
        if self.watermark is None:
            return
        while self.watermark + 1 in self.confirmed:
            self.watermark += 1
            self.confirmed.discard(self.watermark)


class AckTracker:
    """Watermarks for all cameras, and which ones changed since last asked."""

    def __init__(self) -> None:
        self._cameras: dict[str, _Camera] = {}
        self._dirty: set[str] = set()

    def _camera(self, camera_id: str) -> _Camera:
        cam = self._cameras.get(camera_id)
        if cam is None:
            cam = self._cameras[camera_id] = _Camera()
        return cam

    def raise_floor(self, camera_id: str, seq: int) -> None:
        """Everything up to ``seq`` is accounted for (an earlier watermark, or
        the edge's outbox head minus one)."""
        cam = self._camera(camera_id)
        before = cam.watermark
        if cam.watermark is None or seq > cam.watermark:
            cam.watermark = seq
            cam.confirmed = {s for s in cam.confirmed if s > seq}
        cam.advance()
        if cam.watermark != before:
            self._dirty.add(camera_id)

    def confirm(self, camera_id: str, seq: int) -> None:
        """``seq`` of ``camera_id`` is safely in Kafka."""
        cam = self._camera(camera_id)
        if cam.watermark is not None and seq <= cam.watermark:
            return
        before = cam.watermark
        cam.confirmed.add(seq)
        cam.advance()
        if cam.watermark != before:
            self._dirty.add(camera_id)

    def watermark(self, camera_id: str) -> int | None:
        cam = self._cameras.get(camera_id)
        return cam.watermark if cam else None

    def pending(self, camera_id: str) -> int:
        """Confirmed seqs waiting for a gap below them to fill."""
        cam = self._cameras.get(camera_id)
        return len(cam.confirmed) if cam else 0

    def take_changed(self) -> dict[str, int]:
        """Watermarks that moved since the last call."""
        out = {c: self._cameras[c].watermark for c in self._dirty if self._cameras[c].watermark is not None}
        self._dirty.clear()
        return out  # type: ignore[return-value]
