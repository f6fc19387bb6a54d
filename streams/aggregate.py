"""Exact per-minute counts: dedupe by (camera, seq), event-time buckets.

Pure logic over a mapping (a Faust table in the worker, a dict in tests).
A bucket is one (camera, class, event-time minute); its value holds the
count *and* the set of seqs counted into it, in one record. A changelogged
table writes each key as one record, so the count and its dedupe state can
never disagree after a crash, which they could if they lived in two tables.
An event always falls in the same bucket, so a duplicate always meets the
seq set that already holds it.

Faust's windowed tables expire windows by wall-clock time, which would drop
an edge's backlog after an outage; these buckets are plain keys pruned by
stream time instead (see :meth:`MinuteCounter.prune`).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, MutableMapping

from schemas.aggregates import MinuteCount
from schemas.codec import MINUTE_MS, Event, EventError, Reason, from_record
from schemas.deadletter import DeadLetter

log = logging.getLogger("fleetsight.aggregate")

COUNTED_TYPES = frozenset({"track.start"})


class SeqSet:
    """A set of ints kept as sorted, merged ``[first, last]`` ranges."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.ranges: list[list[int]] = [list(r) for r in ranges]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.ranges, [seq, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was already there."""
        if seq in self:
            return False
        i = bisect.bisect_right(self.ranges, [seq, float("inf")])
        joins_left = i > 0 and self.ranges[i - 1][1] == seq - 1
        joins_right = i < len(self.ranges) and self.ranges[i][0] == seq + 1
        if joins_left and joins_right:
            self.ranges[i - 1][1] = self.ranges[i][1]
            del self.ranges[i]
        elif joins_left:
            self.ranges[i - 1][1] = seq
        elif joins_right:
            self.ranges[i][0] = seq
        else:
            self.ranges.insert(i, [seq, seq])
        return True

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


@dataclass
class BatchResult:
    counts: dict[str, MinuteCount] = field(default_factory=dict)  # absolute values of touched buckets
    dead: list[DeadLetter] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0  # valid events this aggregate does not count


@dataclass(frozen=True)
class Incoming:
    """One Kafka record as the counter needs it."""

    partition: int
    timestamp_ms: int  # broker append time (LogAppendTime)
    value: bytes


def bucket_key(camera_id: str, object_class: str, minute: int) -> str:
    return f"{camera_id}|{object_class}|{minute}"


def bucket_camera(key: str) -> str:
    return key.split("|", 1)[0]


class MinuteCounter:
    """Applies batches of event records to a table of minute buckets."""

    def __init__(self, table: MutableMapping[str, Any], late_after_ms: int, source_topic: str = "") -> None:
        self.table = table
        self.late_after_ms = late_after_ms
        self.source_topic = source_topic
        self.stream_time: dict[int, int] = {}  # partition -> newest append time seen

    def process(self, records: Iterable[Incoming]) -> BatchResult:
        result = BatchResult()
        touched: dict[str, tuple[dict[str, Any], SeqSet]] = {}
        for record in records:
            if record.timestamp_ms > self.stream_time.get(record.partition, 0):
                self.stream_time[record.partition] = record.timestamp_ms
            try:
                event = from_record(record.value)
            except EventError as exc:
                result.dead.append(DeadLetter.from_error(exc, "streams", record.value, self.source_topic))
                continue
            if record.timestamp_ms - event.ts > self.late_after_ms:
                result.dead.append(self._late(event, record))
                continue
            if event.type not in COUNTED_TYPES:
                result.ignored += 1
                continue
            key = bucket_key(event.camera_id, event.data["class"], event.minute)
            if key not in touched:
                stored = self.table.get(key)
                bucket = dict(stored) if stored else self._new_bucket(event)
                touched[key] = (bucket, SeqSet(bucket["seqs"]))
            bucket, seqs = touched[key]
            if seqs.add(event.seq):
                result.applied += 1
            else:
                result.duplicates += 1
        for key, (bucket, seqs) in touched.items():
            bucket["seqs"] = seqs.ranges
            bucket["count"] = len(seqs)
            self.table[key] = bucket  # one changelog record per bucket per batch
            result.counts[key] = MinuteCount(
                camera_id=bucket["camera_id"],
                site=bucket["site"],
                object_class=bucket["class"],
                minute=bucket["minute"],
                count=bucket["count"],
            )
        return result

    @staticmethod
    def _new_bucket(event: Event) -> dict[str, Any]:
        return {
            "camera_id": event.camera_id,
            "site": event.site,
            "class": event.data["class"],
            "minute": event.minute,
            "count": 0,
            "seqs": [],
        }

    def _late(self, event: Event, record: Incoming) -> DeadLetter:
        age_s = (record.timestamp_ms - event.ts) / 1000
        return DeadLetter.build(
            Reason.LATE,
            f"event time is {age_s:.0f} s before its arrival; the limit is {self.late_after_ms / 1000:.0f} s",
            "streams",
            payload=record.value,
            source_topic=self.source_topic,
            camera_id=event.camera_id,
            seq=event.seq,
            ts=event.ts,
        )

    def prune(self, partition: int, owns: Any) -> list[str]:
        """Delete buckets of ``partition`` that no accepted event can reach.

        An event is accepted only if its time is within ``late_after`` of its
        append time, and append times in a partition only grow, so a bucket
        that ended more than ``late_after`` (plus a minute of slack for
        clock steps) before the partition's stream time is closed for good.
        ``owns(key)`` says whether a key belongs to ``partition``.
        """
        now = self.stream_time.get(partition)
        if now is None:
            return []
        horizon = now - self.late_after_ms - MINUTE_MS
        stale = [
            key for key, bucket in list(self.table.items())
            if bucket and bucket["minute"] + MINUTE_MS < horizon and owns(key)
        ]
        for key in stale:
            del self.table[key]
        return stale

