"""The camera's ledger: kept with the outbox, reported per closed minute, comparable with the worker's rows."""

from __future__ import annotations

import random
from pathlib import Path

from edge.events import NewEvent
from edge.outbox import Outbox
from schemas.codec import MINUTE_MS, Event, encode, validate
from schemas.ledger import MinuteLedger, contribution, digest_hex, seq_digest, seq_hash
from streams.aggregate import Incoming, MinuteAggregator, folds

T0 = 1764072000000  # a minute start


def person(ts: int, track: int = 1) -> NewEvent:
    return NewEvent(ts, "track.start", {"track_id": track, "class": "person", "confidence": 0.9})


def reports(events: list[Event]) -> dict[int, dict]:
    return {e.data["minute"]: e.data for e in events if e.type == "reconcile"}


def test_a_minute_is_reported_once_it_is_over_with_its_figures(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s")
    first = box.append([person(T0 + 1), person(T0 + 2, 2), NewEvent(T0 + 3, "health", {"uptime_s": 1.0})], close_at=T0 + 10)
    assert reports(first) == {}  # the minute is still running
    later = box.append([person(T0 + MINUTE_MS + 5, 3)], close_at=T0 + MINUTE_MS + 5)
    [(minute, body)] = reports(later).items()
    assert minute == T0 and body["events"] == 3 and (body["seq_first"], body["seq_last"]) == (1, 3)
    assert body["totals"] == {"objects|person": 2, "health": 1} and body["dropped"] == 0
    assert body["seq_digest"] == digest_hex(seq_digest([1, 2, 3]))
    validate({"v": 1, "camera_id": "cam-1", "site": "s", "seq": 5, "ts": T0, "type": "reconcile", "data": body})
    # Reported once; the reconcile event (made in the next minute) counts in no minute.
    third = reports(box.append([], close_at=T0 + 2 * MINUTE_MS))
    assert list(third) == [T0 + MINUTE_MS] and third[T0 + MINUTE_MS]["events"] == 1
    assert box.unreported() == []


def test_an_event_for_a_reported_minute_reports_it_again_once_the_last_report_has_gone(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s")
    [report] = reports(box.append([person(T0 + 1)], close_at=T0 + MINUTE_MS)).values()
    # A clock stepped back: the minute changed, but its report still waits to be sent.
    assert reports(box.append([person(T0 + 30_000, 2)], close_at=T0 + MINUTE_MS + 1)) == {}
    box.confirm(2)
    assert reports(box.append([], close_at=T0 + MINUTE_MS + 2))[T0]["events"] == 2


def test_the_ledger_survives_a_restart_and_close_all_reports_the_running_minute(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, "cam-1", "s")
    box.append([person(T0 + 1)])
    box.close()
    box = Outbox(path, "cam-1", "s")
    box.append([person(T0 + 2, 2)])
    assert reports(box.append([], close_at=T0 + 3, close_all=True))[T0]["events"] == 2


def test_a_full_outbox_reports_what_it_dropped_and_a_dropped_report_is_sent_again(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s", max_events=4)
    box.append([person(T0 + i, i) for i in range(3)], close_at=T0 + MINUTE_MS)  # 3 events and the report: full
    assert box.depth() == 4
    box.append([person(T0 + MINUTE_MS + 1, 9)])  # drops seq 1
    ledger = box.ledger(T0)
    assert ledger is not None and (ledger.dropped, ledger.dropped_totals) == (1, {"objects|person": 1})
    events, digest, totals = ledger.expected()
    assert (events, digest, totals) == (2, seq_digest([2, 3]), {"objects|person": 2})
    assert box.unreported() == [T0, T0 + MINUTE_MS]  # changed since its report
    box.append([person(T0 + MINUTE_MS + 2, 10)] * 3)  # drops seqs 2-4: the report (seq 4) went too
    assert reports(box.append([], close_at=T0 + 2 * MINUTE_MS)) == {}  # full: reports wait for room
    box.confirm(6)
    [body] = [b for m, b in reports(box.append([], close_at=T0 + 2 * MINUTE_MS)).items() if m == T0]
    assert (body["events"], body["dropped"]) == (3, 3)


def test_renumbering_moves_the_ledger_to_the_new_seqs(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s")
    box.append([person(T0 + 1), person(T0 + 2, 2)], close_at=T0 + MINUTE_MS)
    box.renumber_after(100)
    ledger = box.ledger(T0)
    assert ledger is not None and ledger.digest == seq_digest([101, 102])
    assert box.unreported() == [T0]


def test_the_ledger_names_exactly_the_cells_the_worker_folds_into() -> None:
    rng = random.Random(5)
    bodies = {
        "track.start": lambda: {"track_id": 1, "class": rng.choice("ab"), "confidence": 0.5},
        "track.end": lambda: {"track_id": 1, "class": rng.choice("ab"), "dwell_s": 1.0, "max_confidence": 0.5},
        "line.cross": lambda: {"track_id": 1, "class": "a", "line": rng.choice(["l1", "l2"]), "direction": rng.choice(["in", "out"]), "geometry": rng.choice(["0123456789abcdef", "fedcba9876543210"])},
        "zone.enter": lambda: {"track_id": 1, "class": "b", "zone": "z"},
        "zone.exit": lambda: {"track_id": 1, "class": "b", "zone": "z", "dwell_s": 2.0, "geometry": "0123456789abcdef"},
        "occupancy": lambda: {"zone": "z", "counts": {"a": rng.randint(0, 3), "b": 0}},
        "health": lambda: {"uptime_s": 1.0},
    }
    ledger = MinuteLedger(T0)
    records = []
    for seq in range(1, 200):
        type_ = rng.choice(list(bodies))
        event = validate({"v": 1, "camera_id": "c", "site": "s", "seq": seq, "ts": T0 + seq, "type": type_, "data": bodies[type_]()})
        ledger.record(seq, type_, event.data)
        records.append(Incoming(0, T0 + 1000, encode([event])))
        # One event, one count per cell it folds into (besides the minute's events row).
        cells = [t.name for t, _, _ in folds(event)][1:]
        assert len(cells) == sum(contribution(type_, event.data).values()), type_
    result = MinuteAggregator(3600_000).process(records, {})
    [events] = [r.values for r in result.rows.values() if r.table == "camera_minute_events"]
    assert (events["events"], events["seq_digest"], events["seq_first"], events["seq_last"]) == (199, digest_hex(ledger.digest), 1, 199)
    cloud: dict[str, int] = {}
    for row in result.rows.values():
        v = row.values
        g = v.get("geometry", "")
        if row.table == "camera_minute_counts":
            cloud |= {f"objects|{v['object_class']}": v["objects"], f"tracks_ended|{v['object_class']}": v["tracks_ended"]}
        elif row.table == "line_minute_crossings":
            cloud |= {f"crossings_{d}|{g}|{v['line']}|{v['object_class']}": v[f"crossings_{d}"] for d in ("in", "out")}
        elif row.table == "zone_minute_stats":
            for name, column in (("entries", "entries"), ("exits", "exits"), ("occupancy", "occupancy_samples")):
                cloud[f"{name}|{g}|{v['zone']}|{v['object_class']}"] = v[column]
        elif row.table == "camera_minute_health":
            cloud["health"] = v["reports"]
    assert {k: n for k, n in cloud.items() if n} == ledger.totals


def test_a_reconcile_event_becomes_the_ledger_row_and_the_newest_report_wins() -> None:
    body = MinuteLedger(T0, events=2, seq_first=1, seq_last=2, digest=seq_digest([1, 2]), totals={"objects|a": 2}).report()

    def report(seq: int, events: int, arrived: int) -> Incoming:
        event = validate({"v": 1, "camera_id": "c", "site": "s", "seq": seq, "ts": T0 + MINUTE_MS, "type": "reconcile", "data": {**body, "events": events}})
        return Incoming(0, arrived, encode([event]))

    # Reports are never late: one sent after a two-day outage still lands.
    result = MinuteAggregator(3600_000).process([report(3, 2, T0 + 2 * 86_400_000), report(9, 5, T0 + 2 * 86_400_000)], {})
    [row] = result.rows.values()
    assert row.table == "camera_minute_ledger" and (row.values["events"], row.version, row.values["minute"]) == (5, 9, T0)
    assert not result.dead


def test_a_full_outbox_reports_each_minute_a_bounded_number_of_times(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s", max_events=50)
    sent = []
    for i in range(600):  # ten minutes, one event a second, the link down: drops all along
        sent += [e for e in box.append([person(T0 + i * 1000, i)], close_at=T0 + i * 1000) if e.type == "reconcile"]
    # A report appended to a full outbox would drop an event, changing a minute: they wait for room.
    assert sent == [] and box.depth() == 50
    box.confirm(box.last_seq())  # the link is back and the cloud has what was left
    after = reports(box.append([], close_at=T0 + 600_000))
    assert sorted(after) == [T0 + m * MINUTE_MS for m in range(10)]
    assert sum(r["events"] for r in after.values()) == 600 and sum(r["events"] - r["dropped"] for r in after.values()) == 50


def test_the_digest_of_many_is_the_xor_of_each_hash() -> None:
    """The cloud folds a record's seqs with ``seq_digest``, the edge one at a time with ``seq_hash``: the same digest."""
    seqs = [1, 2, 3, 255, 256, 65_537, 2**40 + 7, 2**63 - 1]
    one_by_one = 0
    for seq in seqs:
        one_by_one ^= seq_hash(seq)
    assert seq_digest(seqs) == one_by_one and seq_digest([]) == 0
    assert seq_hash(1) == 0x28CC_E1AE_9477_ED5C  # the contract with every edge in the field: never changes
