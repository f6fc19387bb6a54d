"""Exact per-minute aggregates: dedupe, event-time buckets, lateness, pruning."""

from __future__ import annotations

import random

from schemas.codec import MINUTE_MS, encode, validate
from streams.aggregate import Incoming, MinuteAggregator, SeqSet

HOUR = 3600_000
T0 = 1764072000000

BODIES = {
    "track.start": lambda seq, cls: {"track_id": seq, "class": cls, "confidence": 0.9},
    "track.end": lambda seq, cls: {"track_id": seq, "class": cls, "dwell_s": float(seq), "max_confidence": 0.9},
    "line.cross": lambda seq, cls: {"track_id": seq, "class": cls, "line": "door", "direction": "in" if seq % 2 else "out"},
    "zone.enter": lambda seq, cls: {"track_id": seq, "class": cls, "zone": "till"},
    "zone.exit": lambda seq, cls: {"track_id": seq, "class": cls, "zone": "till", "dwell_s": 10.0 * seq},
    "occupancy": lambda seq, cls: {"zone": "till", "counts": {cls: seq, "car": 0}},
    "health": lambda seq, cls: {"uptime_s": 1.0, "fps": 10.0, "frames": 300, "frames_skipped": 100, "inference_ms_p50": 30.0, "inference_ms_p95": 40.0 + seq, "outbox_depth": seq},
}


def rec(seq: int, ts: int, cls: str = "person", camera: str = "cam-1", arrived: int | None = None, type_: str = "track.start") -> Incoming:
    event = validate({"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": type_, "data": BODIES[type_](seq, cls)})
    return Incoming(partition=0, timestamp_ms=arrived if arrived is not None else ts + 1000, value=encode([event]))


def rows(result, table: str) -> dict:
    return {tuple(v for k, v in r.values.items() if k in r.spec.key): r.values for r in result.rows.values() if r.table == table}


def test_seqset_matches_a_python_set() -> None:
    rng = random.Random(3)
    ours, reference = SeqSet(), set()
    for _ in range(3000):
        seq = rng.randint(1, 500)
        assert ours.add(seq) == (seq not in reference)
        reference.add(seq)
        assert len(ours) == len(reference)
    assert all((s in ours) == (s in reference) for s in range(0, 502))
    assert all(a[1] + 1 < b[0] for a, b in zip(ours.ranges, ours.ranges[1:]))


def test_duplicates_are_dropped_across_batches() -> None:
    table: dict = {}
    agg = MinuteAggregator(24 * HOUR)
    first = agg.process([rec(1, T0), rec(2, T0), rec(2, T0)], table)
    assert (first.applied, first.duplicates) == (2, 1)
    again = agg.process([rec(1, T0), rec(3, T0 + 10)], table)
    assert (again.applied, again.duplicates) == (1, 1)
    # Every batch re-emits the absolute value of the rows it touched.
    [row] = rows(again, "camera_minute_counts").values()
    assert (row["objects"], row["events"]) == (3, 3)


def test_every_event_type_lands_in_its_table() -> None:
    agg, table = MinuteAggregator(24 * HOUR), {}
    batch = [rec(seq, T0 + seq, type_=t) for seq, t in enumerate(BODIES, start=1)]
    batch += [rec(10, T0 + 10, type_="zone.exit"), rec(12, T0 + 12, type_="line.cross"), rec(13, T0 + 13, type_="occupancy")]
    result = agg.process(batch + batch, table)  # everything twice: duplicates change nothing
    assert result.applied == 10 and result.duplicates == 10
    [counts] = rows(result, "camera_minute_counts").values()
    assert (counts["objects"], counts["tracks_ended"], counts["dwell_mean_s"], counts["dwell_max_s"]) == (1, 1, 2.0, 2.0)
    line = rows(result, "line_minute_crossings")[("cam-1", "", "door", "person", T0)]
    assert (line["crossings_in"], line["crossings_out"], line["events"]) == (1, 1, 2)
    zone = rows(result, "zone_minute_stats")[("cam-1", "", "till", "person", T0)]
    assert (zone["entries"], zone["exits"], zone["dwell_mean_s"], zone["dwell_max_s"]) == (1, 2, 75.0, 100.0)
    assert (zone["occupancy_samples"], zone["occupancy_mean"], zone["occupancy_max"]) == (2, 9.5, 13)
    car = rows(result, "zone_minute_stats")[("cam-1", "", "till", "car", T0)]
    assert (car["occupancy_samples"], car["occupancy_mean"], car["occupancy_max"], car["entries"]) == (2, 0.0, 0, 0)
    [health] = rows(result, "camera_minute_health").values()
    assert (health["reports"], health["frames"], health["frames_skipped"], health["inference_ms_p95"], health["outbox_depth_max"]) == (1, 300, 100, 47.0, 7)


def test_events_count_in_their_event_time_minute_even_hours_late() -> None:
    agg, table = MinuteAggregator(24 * HOUR), {}
    now = T0 + 5 * HOUR
    result = agg.process([rec(1, now, arrived=now), rec(2, now - 2 * HOUR, "car", arrived=now), rec(3, now - 2 * HOUR + 59_999, "car", arrived=now)], table)
    got = {(k[1], k[2], v["objects"]) for k, v in rows(result, "camera_minute_counts").items()}
    assert got == {("person", now, 1), ("car", now - 2 * HOUR, 2)}


def test_too_late_goes_to_dead_letter_with_reason() -> None:
    agg, table = MinuteAggregator(24 * HOUR, "events"), {}
    result = agg.process([rec(1, T0, arrived=T0 + 25 * HOUR), rec(2, T0, arrived=T0 + 23 * HOUR)], table)
    assert result.applied == 1
    [letter] = result.dead
    assert letter.reason == "late" and letter.seq == 1 and letter.camera_id == "cam-1"
    assert "90000 s" in letter.detail
    assert [e.seq for _, e in result.late] == [1]


def test_unreadable_record_is_dead_lettered() -> None:
    result = MinuteAggregator(HOUR).process([Incoming(0, T0, b"not json")], {})
    assert [d.reason for d in result.dead] == ["malformed"]


def test_a_record_of_several_events_folds_each_once() -> None:
    events = [validate({"v": 1, "camera_id": "cam-1", "site": "s", "seq": s, "ts": T0 + s, "type": "track.start",
                        "data": {"track_id": s, "class": "person", "confidence": 0.9}}) for s in (1, 2, 3)]
    bad = {"v": 1, "camera_id": "cam-1", "site": "s", "seq": 4, "ts": T0, "type": "nope", "data": {}}
    import json

    value = json.dumps([e.to_dict() for e in events] + [bad]).encode()
    result = MinuteAggregator(HOUR).process([Incoming(0, T0 + 1000, value), Incoming(0, T0 + 1000, value)], {})
    assert (result.applied, result.duplicates) == (3, 3)
    assert [d.reason for d in result.dead] == ["invalid", "invalid"]
    [row] = rows(result, "camera_minute_counts").values()
    assert row["objects"] == 3


def test_prune_only_closes_buckets_no_accepted_event_can_reach() -> None:
    table: dict = {}
    agg = MinuteAggregator(HOUR)
    agg.process([rec(1, T0, arrived=T0), rec(2, T0 + 30 * MINUTE_MS, arrived=T0 + 30 * MINUTE_MS)], table)
    assert agg.prune(table, 0, lambda k: True) == []
    later = T0 + HOUR + 3 * MINUTE_MS
    agg.process([rec(3, later, arrived=later)], table)
    pruned = agg.prune(table, 0, lambda k: True)  # its object count and its events row
    assert len(pruned) == 2 and all(key.endswith(f"|{T0}") for key in pruned)
    assert agg.prune(table, 0, lambda k: False) == []
    # An event for the closed minute is now late, never a fresh count of 1.
    result = agg.process([rec(1, T0, arrived=later)], table)
    assert [d.reason for d in result.dead] == ["late"] and not result.rows
