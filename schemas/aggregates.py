"""Aggregate records that stream processors emit and sinks write.

Each record carries an absolute value, never a delta. A count is the number
of distinct (camera, seq) events in its bucket, so for a given bucket it only
grows: a sink keeps the largest value it has seen, which makes replays and
partial recounts after a crash change nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Objects seen (tracks started) per camera, class and event-time minute."""

    camera_id: str
    site: str
    object_class: str
    minute: int  # start of the minute, ms since epoch, UTC
    count: int

    @property
    def key(self) -> str:
        return f"{self.camera_id}|{self.object_class}|{self.minute}"

    def to_record(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, value: bytes) -> "MinuteCount":
        return cls(**json.loads(value))
