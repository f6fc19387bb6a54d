"""Dead-letter records: input that was not applied, with the reason."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from schemas.codec import EventError, Reason

PAYLOAD_KEEP = 4096
# Where the input was refused: the bridge (MQTT), the stream worker, or the
# notifier (an alert record it cannot read).
Stage = Literal["bridge", "streams", "notifier"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Value of one record on the dead-letter topic (``deadletter.schema.json``)."""

    reason: str
    detail: str
    stage: Stage
    received_at: int
    source_topic: str | None = None
    camera_id: str | None = None
    seq: int | None = None
    ts: int | None = None
    payload_size: int = 0
    payload: str | None = None
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    v: int = 1

    @classmethod
    def build(
        cls,
        reason: Reason | str,
        detail: str,
        stage: Stage,
        payload: bytes | None = None,
        source_topic: str | None = None,
        camera_id: str | None = None,
        seq: Any = None,
        ts: Any = None,
    ) -> DeadLetter:
        """A record for ``payload``, cut to a size a consumer can afford."""
        text: str | None = None
        encoding: Literal["utf-8", "base64"] = "utf-8"
        if payload is not None:
            head = payload[:PAYLOAD_KEEP]
            try:
                text = head.decode()
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(head).decode(), "base64"
        return cls(
            reason=str(reason),
            detail=detail,
            stage=stage,
            received_at=int(time.time() * 1000),
            source_topic=source_topic,
            camera_id=camera_id if isinstance(camera_id, str) else None,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
            payload_size=len(payload) if payload is not None else 0,
            payload=text,
            payload_encoding=encoding,
        )

    @classmethod
    def from_error(
        cls,
        error: EventError,
        stage: Stage,
        payload: bytes | None,
        source_topic: str | None,
        camera_id: str | None = None,
    ) -> DeadLetter:
        return cls.build(
            error.reason,
            error.detail,
            stage,
            payload=payload,
            source_topic=source_topic,
            camera_id=camera_id or error.claimed("camera_id"),
            seq=error.claimed("seq"),
            ts=error.claimed("ts"),
        )

    def to_record(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, value: bytes) -> DeadLetter:
        return cls(**json.loads(value))
