"""Exact minute counts: dedupe, event-time buckets, lateness, pruning."""

from __future__ import annotations

import random

from schemas.codec import MINUTE_MS, to_record, validate
from streams.aggregate import Incoming, MinuteCounter, SeqSet, bucket_key

HOUR = 3600_000
T0 = 1764072000000


def rec(seq: int, ts: int, cls: str = "person", camera: str = "cam-1", arrived: int | None = None, type_: str = "track.start") -> Incoming:
    data = {"track_id": seq, "class": cls, "confidence": 0.9} if type_ == "track.start" else {"uptime_s": 1.0}
    event = validate({"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": type_, "data": data})
    return Incoming(partition=0, timestamp_ms=arrived if arrived is not None else ts + 1000, value=to_record(event))


def test_seqset_matches_a_python_set() -> None:
    rng = random.Random(3)
    ours, reference = SeqSet(), set()
    for _ in range(3000):
        seq = rng.randint(1, 500)
        assert ours.add(seq) == (seq not in reference)
        reference.add(seq)
        assert len(ours) == len(reference)
    assert all((s in ours) == (s in reference) for s in range(0, 502))
    assert ours.ranges == [[1, 500]] or len(ours.ranges) > 1
    assert all(a[1] + 1 < b[0] for a, b in zip(ours.ranges, ours.ranges[1:]))


def test_duplicates_are_dropped_across_batches() -> None:
    table: dict = {}
    counter = MinuteCounter(table, 24 * HOUR)
    first = counter.process([rec(1, T0), rec(2, T0), rec(2, T0)])
    assert (first.applied, first.duplicates) == (2, 1)
    again = counter.process([rec(1, T0), rec(3, T0 + 10)])
    assert (again.applied, again.duplicates) == (1, 1)
    key = bucket_key("cam-1", "person", T0)
    assert table[key]["count"] == 3
    # Every batch re-emits the absolute value of the buckets it touched.
    assert again.counts[key].count == 3


def test_events_count_in_their_event_time_minute_even_hours_late() -> None:
    table: dict = {}
    counter = MinuteCounter(table, 24 * HOUR)
    now = T0 + 5 * HOUR
    result = counter.process([rec(1, now, arrived=now), rec(2, now - 2 * HOUR, "car", arrived=now), rec(3, now - 2 * HOUR + 59_999, "car", arrived=now)])
    assert {(c.object_class, c.minute, c.count) for c in result.counts.values()} == {
        ("person", now, 1),
        ("car", now - 2 * HOUR, 2),
    }


def test_too_late_goes_to_dead_letter_with_reason() -> None:
    counter = MinuteCounter({}, 24 * HOUR, "events")
    result = counter.process([rec(1, T0, arrived=T0 + 25 * HOUR), rec(2, T0, arrived=T0 + 23 * HOUR)])
    assert result.applied == 1
    [letter] = result.dead
    assert letter.reason == "late" and letter.seq == 1 and letter.camera_id == "cam-1"
    assert "90000 s" in letter.detail


def test_non_counted_types_are_ignored_not_lost() -> None:
    result = MinuteCounter({}, HOUR).process([rec(1, T0, type_="health")])
    assert (result.applied, result.ignored, result.dead) == (0, 1, [])


def test_unreadable_record_is_dead_lettered() -> None:
    result = MinuteCounter({}, HOUR).process([Incoming(0, T0, b"not json")])
    assert [d.reason for d in result.dead] == ["malformed"]


def test_prune_only_closes_buckets_no_accepted_event_can_reach() -> None:
    table: dict = {}
    counter = MinuteCounter(table, HOUR)
    counter.process([rec(1, T0, arrived=T0), rec(2, T0 + 30 * MINUTE_MS, arrived=T0 + 30 * MINUTE_MS)])
    assert counter.prune(0, lambda k: True) == []
    # Stream time moves on: the first bucket is now beyond lateness + slack.
    later = T0 + HOUR + 3 * MINUTE_MS
    counter.process([rec(3, later, arrived=later)])
    assert counter.prune(0, lambda k: True) == [bucket_key("cam-1", "person", T0)]
    assert counter.prune(0, lambda k: False) == []
    # An event for the closed minute is now late, never a fresh count of 1.
    result = counter.process([rec(1, T0, arrived=later)])
    assert [d.reason for d in result.dead] == ["late"] and not result.counts
