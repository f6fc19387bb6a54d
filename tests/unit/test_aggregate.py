"""Exact per-minute aggregates: dedupe, event-time buckets, lateness, pruning."""

from __future__ import annotations

import json
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


def test_hours_and_days_hold_exactly_the_sum_of_their_minutes_whatever_the_order_and_the_repeats() -> None:
    """A late event and a resent backlog land in the hour and day as in the minute; repeats change nothing."""
    rng = random.Random(7)
    types = ["track.start", "track.end", "line.cross", "zone.enter", "zone.exit", "occupancy", "health"]
    sent = [rec(seq, T0 + rng.randrange(0, 30 * HOUR), cls=rng.choice(["person", "car"]), type_=rng.choice(types), arrived=T0 + 31 * HOUR)
            for seq in range(1, 1500)]
    agg, state = MinuteAggregator(40 * HOUR), {}
    latest: dict = {}
    stream = sent + rng.sample(sent, 500)  # an edge resending part of its outbox
    rng.shuffle(stream)
    for start in range(0, len(stream), 97):
        for key, row in agg.process(stream[start:start + 97], state).rows.items():
            latest[key] = row  # the sink keeps the newest version of each row
    by_table: dict = {}
    for row in latest.values():
        by_table.setdefault(row.table, {})[tuple(row.values[k] for k in row.spec.key)] = row.values
    for minute_table, rolled, columns in (
        ("camera_minute_counts", ("camera_hour_counts", "camera_day_counts"), ("objects", "tracks_ended", "events")),
        ("line_minute_crossings", ("line_hour_crossings", "line_day_crossings"), ("crossings_in", "crossings_out", "events")),
        ("zone_minute_stats", ("zone_hour_stats", "zone_day_stats"), ("entries", "exits", "occupancy_samples", "events")),
        ("camera_minute_health", ("camera_hour_health", "camera_day_health"), ("reports", "frames", "frames_skipped", "events")),
    ):
        minutes = by_table[minute_table]
        for table, span in zip(rolled, (HOUR, 24 * HOUR)):
            expected: dict = {}
            for key, values in minutes.items():
                total = expected.setdefault((*key[:-1], key[-1] - key[-1] % span), dict.fromkeys(columns, 0))
                for column in columns:
                    total[column] += values[column]
            got = {key: {c: v[c] for c in columns} for key, v in by_table[table].items()}
            assert got == expected, table
    # Means are weighted by what they average: a day's dwell is the mean over every exit of the day.
    for key, day in by_table["zone_day_stats"].items():
        of_day = [v for k, v in by_table["zone_minute_stats"].items() if k[:-1] == key[:-1] and k[-1] - k[-1] % (24 * HOUR) == key[-1]]
        if day["exits"]:
            weighted = sum(v["dwell_mean_s"] * v["exits"] for v in of_day if v["exits"]) / day["exits"]
            assert abs(day["dwell_mean_s"] - weighted) < 1e-6 * weighted
            assert day["dwell_max_s"] == max(v["dwell_max_s"] for v in of_day if v["exits"])


def test_an_hour_bucket_stays_until_its_last_minute_is_closed() -> None:
    agg, state = MinuteAggregator(HOUR), {}
    hour = T0 - T0 % HOUR
    agg.process([rec(1, hour + MINUTE_MS)], state)
    hour_keys = [k for k in state if "|camera_hour_counts|" in k]
    assert hour_keys
    # Stream time moves past the first minute's horizon but not the hour's last minute's.
    agg.process([rec(2, hour + 59 * MINUTE_MS, arrived=hour + HOUR + 30 * MINUTE_MS)], state)
    agg.prune(state, 0, owns=lambda key: True)
    assert not any(k.endswith(f"|{hour + MINUTE_MS}") and "|camera_minute_counts|" in k for k in state)
    assert all(k in state for k in hour_keys)
    agg.process([rec(3, hour + 3 * HOUR, arrived=hour + 3 * HOUR)], state)
    agg.prune(state, 0, owns=lambda key: True)
    assert not any(k in state for k in hour_keys)


def test_an_event_older_than_the_retention_takes_the_late_path_with_that_reason() -> None:
    day = 24 * HOUR
    agg, state = MinuteAggregator(40 * day, retention_ms=30 * day), {}
    result = agg.process([rec(1, T0, arrived=T0 + 31 * day), rec(2, T0 + 2 * day, arrived=T0 + 31 * day)], state)
    [dead] = result.dead
    assert dead.reason == "late" and "FLEETSIGHT_RETENTION_DAYS" in dead.detail and dead.seq == 1
    assert [e.seq for _, e in result.late] == [1]
    assert {r.values["objects"] for r in result.rows.values() if r.table == "camera_day_counts"} == {1}


def _event(camera: str, seq: int, rng: random.Random) -> dict:
    type_ = rng.choice(list(BODIES))
    ts = T0 + seq * 1000 + rng.randrange(0, 30_000)  # a camera's clock runs with its seqs, jittered
    return {"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": type_, "data": BODIES[type_](seq, rng.choice(["person", "car"]))}


def _latest(agg: MinuteAggregator, records: list[Incoming], batch: int) -> dict:
    state: dict = {}
    latest: dict = {}
    for start in range(0, len(records), batch):
        latest.update(agg.process(records[start:start + batch], state).rows)
    return {key: row.values for key, row in latest.items()}


def test_records_of_many_events_fold_as_their_events_one_by_one() -> None:
    """A record's events are deduped and folded per bucket (issue 37); every row comes out as folding them one at a time does."""
    rng = random.Random(37)
    events = {c: [_event(c, seq, rng) for seq in range(1, 700)] for c in ("cam-1", "cam-2", "cam-3")}
    arrived = T0 + 2 * HOUR
    singles = [Incoming(0, arrived, encode([validate(e)])) for c in events for e in events[c]]
    records = []
    for evs in events.values():
        at = 0
        while at < len(evs):  # edge batches of any size, then resends overlapping what went before
            size = rng.randint(1, 60)
            batch = evs[at:at + size]
            if rng.random() < 0.3:  # an edge that put an event in its batch twice
                batch = [*batch, batch[rng.randrange(len(batch))]]
            records.append(Incoming(0, arrived, encode([validate(e) for e in batch])))
            back = rng.randint(0, at)
            records.append(Incoming(0, arrived, encode([validate(e) for e in evs[back:back + rng.randint(1, 30)]])))
            at += size
    rng.shuffle(records)
    one_by_one = _latest(MinuteAggregator(24 * HOUR), singles, 50)
    grouped = _latest(MinuteAggregator(24 * HOUR), records, 7)
    assert grouped.keys() == one_by_one.keys()
    for key, values in one_by_one.items():
        for column, value in values.items():
            if isinstance(value, float):
                assert abs(grouped[key][column] - value) <= 1e-9 * abs(value), (key, column)
            else:
                assert grouped[key][column] == value, (key, column)


def test_an_event_twice_in_one_record_counts_once() -> None:
    """Grouped per bucket, the second copy met the first in the seq set and both were dropped (found in issue 37's review)."""
    minute = T0 - T0 % MINUTE_MS
    events = [
        validate({"v": 1, "camera_id": "cam-1", "site": "s", "seq": seq, "ts": minute + seq, "type": "track.start", "data": BODIES["track.start"](seq, "person")})
        for seq in (1, 2, 2, 3)
    ]
    records = [Incoming(0, minute + 10_000, encode(events))]
    result = MinuteAggregator(24 * HOUR).process(records, {})
    assert (result.applied, result.duplicates) == (3, 1)
    [row] = rows(result, "camera_minute_counts").values()
    assert (row["objects"], row["events"]) == (3, 3)
    assert [new for _, _, new in result.events] == [True, True, False, True]


def test_a_bucket_saved_with_its_own_seqs_goes_on_counting_exactly() -> None:
    """State from before issue 37: every minute bucket held its seqs; its count and range carry over, a replay is still dropped."""
    minute = T0 - T0 % MINUTE_MS
    common = {"camera_id": "cam-1", "site": "s", "minute": minute, "seqs": [[1, 3]]}
    state = {
        f"cam-1|camera_minute_events|{minute}": {**common, "table": "camera_minute_events", "dims": {}, "acc": {"digest": 0}},
        f"cam-1|camera_minute_counts|person|{minute}": {
            **common, "table": "camera_minute_counts", "dims": {"object_class": "person"}, "acc": {"objects": 3},
        },
    }
    result = MinuteAggregator(24 * HOUR).process([rec(2, T0), rec(4, T0 + 5)], state)
    assert (result.applied, result.duplicates) == (1, 1)
    [row] = rows(result, "camera_minute_counts").values()
    assert (row["objects"], row["events"]) == (4, 4)
    counts = state[f"cam-1|camera_minute_counts|person|{minute}"]
    assert "seqs" not in counts and (counts["events"], counts["seq_first"], counts["seq_last"]) == (4, 1, 4)
    [events] = rows(result, "camera_minute_events").values()
    assert (events["events"], events["seq_first"], events["seq_last"]) == (4, 1, 4)
    assert state[f"cam-1|camera_minute_events|{minute}"]["seqs"] == [[1, 4]]


def test_an_event_that_matches_a_planned_one_in_all_but_its_types_is_still_checked() -> None:
    """A shared plan skips the quick check only for an event whose checked fields equal a checked event's (issue 37)."""
    good = {"v": 1, "camera_id": "cam-1", "site": "s", "ts": T0, "type": "line.cross",
            "data": {"track_id": 1, "class": "person", "line": "door", "direction": "in"}}
    bad = [
        {**good, "seq": 2, "data": {**good["data"], "class": 7}},  # a number where the class goes
        {**good, "seq": 3, "v": 2},  # another schema version
        {**good, "seq": 4, "data": {**good["data"], "direction": "sideways"}},
        {**good, "seq": 5, "data": {**good["data"], "geometry": 5}},
    ]
    payload = json.dumps([{**good, "seq": 1}, *bad, {**good, "seq": 6}]).encode()
    result = MinuteAggregator(24 * HOUR).process([Incoming(0, T0 + 1000, payload)], {})
    assert result.applied == 2
    assert [d.seq for d in result.dead] == [2, 3, 4, 5] and all(d.reason in ("invalid", "unsupported_version") for d in result.dead)
    [row] = rows(result, "line_minute_crossings").values()
    assert row["crossings_in"] == 2
