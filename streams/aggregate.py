"""Exact per-minute aggregates: dedupe by (camera, seq), event-time buckets.

Pure logic over a mapping (in the worker, the buckets a batch touches, read
from PostgreSQL by ``streams.state``; a dict in tests). A bucket is one row
of a per-minute SQL table, e.g. (camera, class, minute) of
``camera_minute_counts``; its value holds the running sums, how many events
they hold and their first and last seq. Every counted event also falls in
its camera-minute's bucket of ``camera_minute_events``, and that bucket
alone keeps the set of seqs folded (as ranges): the dedupe state. An event
always falls in the same buckets, so a duplicate always meets the seq set
that already holds it, and the sums and their dedupe state change in one
transaction, so they can never disagree after a crash. (Until issue 37
every bucket kept its own seq set: a camera's events spread over its
buckets left each set one range per event, and writing those sets back
was a sixth of the worker's time; a state saved that way is read as
before, see :func:`_minute_bucket`.)

Faust's windowed tables expire windows by wall-clock time, which would drop
an edge's backlog after an outage; these buckets are plain keys closed by
stream time instead (see :meth:`MinuteAggregator.horizon`).

An event new to a bucket of a per-minute table with hour and day tables
(counts, crossings, zones, health: ``schemas.aggregates.ROLLUPS``) is also
added to the bucket of its hour and of its day. Those buckets keep no seqs: an event is
always in the same minute, so the minute's seqs decide once whether it is
new, and the minute, hour and day change in the same transaction. Their
version (``events``) counts the events added, so it grows as the minutes'
do. An hour or day bucket stays until its last minute is closed.

Every event but ``reconcile`` also folds into its camera-minute's row of
``camera_minute_events`` (count, seq range, seq digest): the cloud's side of
the reconciliation. A ``reconcile`` event (the camera's side) becomes a row
of ``camera_minute_ledger`` as it is, its seq the row's version.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from schemas.aggregates import (
    CAMERA_MINUTE_COUNTS,
    CAMERA_MINUTE_EVENTS,
    CAMERA_MINUTE_HEALTH,
    CAMERA_MINUTE_LEDGER,
    LINE_MINUTE_CROSSINGS,
    ROLLUP_TABLES,
    ROLLUPS,
    TABLES,
    ZONE_MINUTE_STATS,
    Rollup,
    Row,
    TableSpec,
)
from schemas.codec import MINUTE_MS, Event, EventError, Reason, checked, decode_validated, read_wire
from schemas.deadletter import DeadLetter
from schemas.ledger import UNCOUNTED, digest_hex, seq_digest

log = logging.getLogger("fleetsight.aggregate")


class SeqSet:
    """A set of ints kept as sorted, merged ``[first, last]`` ranges."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.ranges: list[list[int]] = [list(r) for r in ranges]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.ranges, [seq, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was already there."""
        ranges = self.ranges
        if not ranges or seq > ranges[-1][1]:  # the usual case: seqs arrive in order
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
            return True
        if seq in self:
            return False
        i = bisect.bisect_right(ranges, [seq, float("inf")])
        joins_left = i > 0 and ranges[i - 1][1] == seq - 1
        joins_right = i < len(ranges) and ranges[i][0] == seq + 1
        if joins_left and joins_right:
            ranges[i - 1][1] = ranges[i][1]
            del ranges[i]
        elif joins_left:
            ranges[i - 1][1] = seq
        elif joins_right:
            ranges[i][0] = seq
        else:
            ranges.insert(i, [seq, seq])
        return True

    def add_many(self, seqs: Iterable[int]) -> list[int]:
        """Add every seq of ``seqs``; the ones that were already there (usually none).

        One loop with the in-order case inline: a record's seqs of one
        bucket arrive ascending, after what the bucket holds.
        """
        ranges = self.ranges
        there: list[int] = []
        last = ranges[-1] if ranges else None
        for seq in seqs:
            if last is not None and seq == last[1] + 1:
                last[1] = seq
            elif last is None or seq > last[1]:
                last = [seq, seq]
                ranges.append(last)
            else:
                if not self.add(seq):
                    there.append(seq)
                last = ranges[-1]
        return there

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    @property
    def first(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    @property
    def last(self) -> int | None:
        return self.ranges[-1][1] if self.ranges else None


# --- what each event adds to which rows --------------------------------------------

# A fold: (table, key columns other than camera_id and minute, {accumulator: (op, value)}).
Fold = tuple[TableSpec, dict[str, Any], dict[str, tuple[str, float]]]


def folds(event: Event) -> Iterator[Fold]:
    """The per-minute rows ``event`` contributes to, and how (``schemas.ledger.contribution`` names the same cells)."""
    d = event.data
    if event.type in UNCOUNTED:
        return
    # The event's own seq, hashed only when applied (not for keys(), not for a duplicate).
    yield CAMERA_MINUTE_EVENTS, {}, {"digest": ("xor_seq_hash", 1)}
    geometry = {"geometry": d["geometry"]} if "geometry" in d else {}  # absent: "" (and old bucket keys stay valid)
    if event.type == "track.start":
        yield CAMERA_MINUTE_COUNTS, {"object_class": d["class"]}, {"objects": ("add", 1)}
    elif event.type == "track.end":
        dwell = d["dwell_s"]
        yield CAMERA_MINUTE_COUNTS, {"object_class": d["class"]}, {
            "tracks_ended": ("add", 1), "dwell_sum": ("add", dwell), "dwell_max": ("max", dwell),
        }
    elif event.type == "line.cross":
        column = "crossings_in" if d["direction"] == "in" else "crossings_out"
        yield LINE_MINUTE_CROSSINGS, {**geometry, "line": d["line"], "object_class": d["class"]}, {column: ("add", 1)}
    elif event.type == "zone.enter":
        yield ZONE_MINUTE_STATS, {**geometry, "zone": d["zone"], "object_class": d["class"]}, {"entries": ("add", 1)}
    elif event.type == "zone.exit":
        dwell = d["dwell_s"]
        yield ZONE_MINUTE_STATS, {**geometry, "zone": d["zone"], "object_class": d["class"]}, {
            "exits": ("add", 1), "dwell_sum": ("add", dwell), "dwell_max": ("max", dwell),
        }
    elif event.type == "occupancy":
        for cls, n in d["counts"].items():
            yield ZONE_MINUTE_STATS, {**geometry, "zone": d["zone"], "object_class": cls}, {
                "occupancy_sum": ("add", n), "occupancy_max": ("max", n), "occupancy_samples": ("add", 1),
            }
    elif event.type == "health":
        yield CAMERA_MINUTE_HEALTH, {}, {
            "reports": ("add", 1),
            "frames": ("add", d.get("frames", 0)),
            "frames_skipped": ("add", d.get("frames_skipped", 0)),
            "fps_sum": ("add", d.get("fps", 0.0)),
            "p50_sum": ("add", d.get("inference_ms_p50", 0.0)),
            "inference_ms_p95": ("max", d.get("inference_ms_p95", 0.0)),
            "outbox_depth_max": ("max", d.get("outbox_depth", 0)),
            "people_seen": ("add", d.get("people_seen", 0)),
            "people_overlapping": ("add", d.get("people_overlapping", 0)),
        }


Ops = dict[str, tuple[str, float]]


def _fold(acc: dict[str, float], ops: Ops, seqs: list[int]) -> None:
    """Add ``ops`` of the events ``seqs`` (each new to the bucket) to a bucket's accumulators."""
    for name, (op, value) in ops.items():
        if op == "add":
            if type(value) is int:
                acc[name] = acc.get(name, 0) + value * len(seqs)
            else:  # floats added one by one, as ever: the same sum to the last bit
                total = acc.get(name, 0)
                for _ in seqs:
                    total += value
                acc[name] = total
        elif op == "xor_seq_hash":
            acc[name] = int(acc.get(name, 0)) ^ seq_digest(seqs)
        else:
            acc[name] = max(acc.get(name, value), value)


def last_minute(bucket: dict[str, Any]) -> int:
    """The last minute a bucket covers (an hour or day bucket's ``last``): it is closed when that minute is."""
    return int(bucket.get("last", bucket["minute"]))


def _mean(total: float, n: float) -> float | None:
    return total / n if n else None


def finish(table: TableSpec, acc: dict[str, float]) -> dict[str, Any]:
    """Public column values from a bucket's accumulators (an hour or day bucket's as its minutes')."""
    if table.name in ROLLUP_TABLES:
        table = ROLLUP_TABLES[table.name].base

    def a(k: str) -> Any:
        return acc.get(k, 0)

    if table is CAMERA_MINUTE_COUNTS:
        return {
            "objects": a("objects"), "tracks_ended": a("tracks_ended"),
            "dwell_mean_s": _mean(a("dwell_sum"), a("tracks_ended")), "dwell_max_s": acc.get("dwell_max"),
        }
    if table is LINE_MINUTE_CROSSINGS:
        return {"crossings_in": a("crossings_in"), "crossings_out": a("crossings_out")}
    if table is ZONE_MINUTE_STATS:
        return {
            "entries": a("entries"), "exits": a("exits"),
            "dwell_mean_s": _mean(a("dwell_sum"), a("exits")), "dwell_max_s": acc.get("dwell_max"),
            "occupancy_mean": _mean(a("occupancy_sum"), a("occupancy_samples")),
            "occupancy_max": acc.get("occupancy_max"), "occupancy_samples": a("occupancy_samples"),
        }
    if table is CAMERA_MINUTE_EVENTS:
        return {"seq_digest": digest_hex(int(a("digest")))}
    if table is CAMERA_MINUTE_HEALTH:
        return {
            "reports": a("reports"), "frames": a("frames"), "frames_skipped": a("frames_skipped"),
            "fps_mean": _mean(a("fps_sum"), a("reports")), "inference_ms_p50": _mean(a("p50_sum"), a("reports")),
            "inference_ms_p95": acc.get("inference_ms_p95"), "outbox_depth_max": acc.get("outbox_depth_max"),
            "people_seen": a("people_seen"), "people_overlapping": a("people_overlapping"),
            "crowding": _mean(a("people_overlapping"), a("people_seen")),
        }
    raise ValueError(f"not a per-minute table: {table.name}")


def bucket_key(table: TableSpec, camera_id: str, dims: dict[str, Any], minute: int) -> str:
    """Key of a bucket: camera, table, the other key columns in order, minute."""
    if not dims:
        return f"{camera_id}|{table.name}|{minute}"
    return "|".join((camera_id, table.name, *[str(dims[k]) for k in _DIMS[table.name] if k in dims], str(minute)))


# table -> its key columns other than camera and minute (hour, day)
_DIMS: dict[str, tuple[str, ...]] = {
    name: tuple(k for k in spec.key if k != "camera_id" and k not in spec.times) for name, spec in TABLES.items()
}


def bucket_camera(key: str) -> str:
    return key.split("|", 1)[0]


def ledger_row(event: Event) -> Row:
    """The row of ``camera_minute_ledger`` a ``reconcile`` event reports."""
    d = event.data
    return Row(CAMERA_MINUTE_LEDGER.name, {
        "camera_id": event.camera_id, "minute": d["minute"], "site": event.site, "events": d["events"],
        "seq_first": d["seq_first"], "seq_last": d["seq_last"], "seq_digest": d["seq_digest"], "totals": d["totals"],
        "dropped": d.get("dropped", 0), "dropped_digest": d.get("dropped_digest", digest_hex(0)),
        "dropped_totals": d.get("dropped_totals", {}), "reported_at": event.ts, "version": event.seq,
    })


# --- the aggregator ------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One Kafka record (one camera's consecutive events: an MQTT message, or several packed by the bridge) as the aggregator needs it."""

    partition: int
    timestamp_ms: int  # broker append time (LogAppendTime)
    value: bytes
    offset: int = -1  # in its partition of the events topic (-1: not from Kafka)


# Where a new event of a minute bucket also goes: (bucket key, rollup, period start).
RolledUp = tuple[tuple[str, Rollup, int], ...]
# A fold with its bucket's key: what one event does to one bucket (and its hour and day).
Planned = tuple[str, TableSpec, dict[str, Any], dict[str, tuple[str, float]], RolledUp]


# What one record does to one bucket: (table, dims, rollups, its first event,
# and runs of seqs, each with what every seq of it adds). A run is the
# record's events that share one plan (so one ops), in record order; an
# event with a plan of its own is a run of one, so float sums are still
# added event by event in record order.
Group = tuple[TableSpec, dict[str, Any], RolledUp, Event, list[tuple[Ops, list[int]]]]
# The record's events per plan (by identity), in the order first seen: (plan, its first event, their seqs).
Runs = dict[int, tuple[list[Planned], Event, list[int]]]


@dataclass(frozen=True)
class Decoded:
    """A record and what it decoded to: events (each with its folds), or the reasons it was refused."""

    record: Incoming
    items: list[Event | EventError]
    # Per item: its folds with their bucket keys (worked out once, for
    # :meth:`MinuteAggregator.keys` and :meth:`MinuteAggregator.apply`); None for an error.
    plans: list[list[Planned] | None]
    # The folds of the record's events that are neither late nor refused,
    # gathered per bucket: a record is one camera's consecutive events, so
    # a bucket's seqs are deduped and folded together (a shared plan's 50
    # events fold as one), not one event at a time.
    groups: dict[str, Group]
    # Items that repeat an earlier event of the record (same camera, minute
    # and seq): left out of the groups, duplicates whatever the state holds.
    repeated: frozenset[int] = frozenset()


def plan(event: Event) -> list[Planned]:
    """``event``'s folds, each with the key of the bucket it goes to."""
    fields = _SAME_FOLDS.get(event.type)
    if fields is None:
        return _plan(event)
    signature = _signature(event, fields)
    planned = _plans.get(signature)
    if planned is None:
        if len(_plans) >= _PLANS_KEPT:
            _plans.clear()
        planned = _plans[signature] = _plan(event)
    return planned


def _signature(event: Event, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """What a shared plan is kept under: the type, camera, minute and the fields the folds depend on."""
    data = event.data
    return (event.type, event.camera_id, event.minute, *[data.get(f) for f in fields])


def _plan(event: Event) -> list[Planned]:
    camera, minute = event.camera_id, event.minute
    return [
        (
            bucket_key(table, camera, dims, minute), table, dims, ops,
            tuple((bucket_key(r.spec, camera, dims, r.period(minute)), r, r.period(minute)) for r in ROLLUPS.get(table.name, ())),
        )
        for table, dims, ops in folds(event)
    ]


def _planned(
    wire: list[Event], oldest: int,
) -> tuple[list[Event | EventError], list[list[Planned] | None], dict[str, Group], frozenset[int]]:
    """A record's events (as ``schemas.codec.read_wire`` reads them), their plans, their groups (events from
    ``oldest`` on), and the items that repeat an earlier one (see :class:`Decoded`).

    An event of a busiest type whose fields are those of an event checked
    and planned before takes that plan with no check of its own: the quick
    check (``schemas.codec.checked``) looks at exactly those fields, and a
    string is equal only to a string. Any other event is checked first.
    """
    items: list[Event | EventError] = []
    plans: list[list[Planned] | None] = []
    runs: Runs = {}
    same, known = _SAME_FOLDS, _plans
    for w in wire:
        fields = same.get(w.type)
        planned = None
        if fields is not None and w.v == 1:
            planned = known.get(_signature(w, fields))
        if planned is None:
            item = checked(w)
            if isinstance(item, EventError):
                items.append(item)
                plans.append(None)
                continue
            planned = plan(item)
            w = item
        items.append(w)
        plans.append(planned)
        if w.ts >= oldest:
            run = runs.get(id(planned))
            if run is None:
                runs[id(planned)] = (planned, w, [w.seq])
            else:
                run[2].append(w.seq)
    groups = _grouped(runs)
    if _repeats(groups):  # rare: an edge that sent an event twice in one message
        runs, repeated = _first_only(items, plans, oldest)
        return items, plans, _grouped(runs), repeated
    return items, plans, groups, frozenset()


def _repeats(groups: dict[str, Group]) -> bool:
    """Whether a camera-minute of the record holds a seq twice."""
    for table, _, _, _, runs in groups.values():
        if table is CAMERA_MINUTE_EVENTS:
            n = sum(len(seqs) for _, seqs in runs)
            if n > 1 and len({seq for _, seqs in runs for seq in seqs}) < n:
                return True
    return False


def _first_only(items: list[Event | EventError], plans: list[list[Planned] | None], oldest: int) -> tuple[Runs, frozenset[int]]:
    """Runs of one event each, in record order, of the first of each (camera, minute, seq); the indexes of the rest.

    Grouped, a seq twice in one record met its own first copy in the
    camera-minute's seq set, and both copies were dropped as duplicates
    (issue 37's grouping, found in review: the event was lost).
    """
    runs: Runs = {}
    seen: set[tuple[str, int, int]] = set()
    repeated: set[int] = set()
    for i, (item, planned) in enumerate(zip(items, plans, strict=True)):
        if not planned or item.ts < oldest:  # type: ignore[union-attr]  # planned: an Event
            continue
        event: Event = item  # type: ignore[assignment]
        key = (event.camera_id, event.minute, event.seq)
        if key in seen:
            repeated.add(i)
        else:
            seen.add(key)
            runs[id(event)] = (planned, event, [event.seq])
    return runs, frozenset(repeated)


def _grouped(runs: Runs) -> dict[str, Group]:
    """A record's runs of events, spread over the buckets their plan folds into."""
    groups: dict[str, Group] = {}
    for planned, first, seqs in runs.values():
        for key, table, dims, ops, rollups in planned:
            group = groups.get(key)
            if group is None:
                groups[key] = (table, dims, rollups, first, [(ops, seqs)])
            else:
                group[4].append((ops, seqs))
    return groups


# The busiest event types whose folds depend only on these fields (and the
# camera and minute): their plans are shared, not made again for each event.
# Working out folds and keys was 2.8 us of an event's 5-6 us in the worker.
_SAME_FOLDS: dict[str, tuple[str, ...]] = {
    "track.start": ("class",),
    "line.cross": ("class", "line", "direction", "geometry"),
    "zone.enter": ("class", "zone", "geometry"),
}
_PLANS_KEPT = 50_000
_plans: dict[tuple[Any, ...], list[Planned]] = {}


def _minute_bucket(
    key: str, group: Group, buckets: MutableMapping[str, Any], touched: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The batch's copy of a minute bucket (made on first touch): stored, or new for ``group``'s first event.

    A bucket saved before issue 37 holds its own seq set: its count and
    first and last seq are taken from it, and only ``camera_minute_events``
    keeps one from now on.
    """
    bucket = touched.get(key)
    if bucket is not None:
        return bucket
    table, dims, _, first, _ = group
    stored = buckets.get(key)
    if not stored:
        bucket = {
            "table": table.name, "camera_id": first.camera_id, "site": first.site, "dims": dims, "minute": first.minute,
            "acc": {}, "events": 0, "seq_first": None, "seq_last": None,
        }
    else:
        bucket = dict(stored)
        bucket["acc"] = dict(stored["acc"])
        if "events" not in bucket:
            seqs = SeqSet(stored["seqs"])
            bucket["events"], bucket["seq_first"], bucket["seq_last"] = len(seqs), seqs.first, seqs.last
    if table is not CAMERA_MINUTE_EVENTS:
        bucket.pop("seqs", None)
    elif "seqs" not in bucket:
        bucket["seqs"] = []
    touched[key] = bucket
    return bucket


@dataclass
class BatchResult:
    rows: dict[str, Row] = field(default_factory=dict)  # absolute values of the touched buckets
    # Every valid event, for status, and whether it was new to the aggregates
    # (False for a duplicate: status rules must not see it twice).
    events: list[tuple[Incoming, Event, bool]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    late: list[tuple[Incoming, Event]] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0


class MinuteAggregator:
    """Applies batches of event records to minute buckets (the state is passed in, see :meth:`apply`)."""

    def __init__(self, late_after_ms: int, source_topic: str = "", retention_ms: int | None = None) -> None:
        # An event older than the shortest retention of the tables would land
        # in a partition already dropped: it takes the late path too.
        self.retention_ms = retention_ms
        self.late_after_ms = min(late_after_ms, retention_ms) if retention_ms else late_after_ms
        self.source_topic = source_topic
        self.stream_time: dict[int, int] = {}  # partition -> newest append time seen

    def process(self, records: Iterable[Incoming], buckets: MutableMapping[str, Any]) -> BatchResult:
        """Decode and apply ``records`` to ``buckets`` (which must hold every bucket they touch)."""
        return self.apply(self.read(records), buckets)

    def read(self, records: Iterable[Incoming]) -> list[Decoded]:
        """Decode records; a record that cannot be read at all holds its one error."""
        out: list[Decoded] = []
        for record in records:
            oldest = self._oldest(record)
            wire = read_wire(record.value)
            if wire is not None:
                out.append(Decoded(record, *_planned(wire, oldest)))
                continue
            try:
                items = decode_validated(record.value)
            except EventError as exc:
                items = [exc]
            plans = [None if isinstance(item, EventError) else plan(item) for item in items]
            runs, repeated = _first_only(items, plans, oldest)  # runs of one: as checked events
            out.append(Decoded(record, items, plans, _grouped(runs), repeated))
        return out

    def _oldest(self, record: Incoming) -> int:
        """The oldest event time of ``record`` that is not late: ``late_after`` before its arrival."""
        return record.timestamp_ms - self.late_after_ms

    @staticmethod
    def keys(decoded: Iterable[Decoded]) -> set[str]:
        """The bucket keys these records fold into: what to load before :meth:`apply`."""
        return {
            key for d in decoded for bucket, group in d.groups.items()
            for key in (bucket, *(rolled[0] for rolled in group[2]))
        }

    def apply(self, decoded: Iterable[Decoded], buckets: MutableMapping[str, Any]) -> BatchResult:
        """Fold ``decoded`` into ``buckets`` (bucket key -> state; each touched key is written once)."""
        result = BatchResult()
        touched: dict[str, dict[str, Any]] = {}
        seqsets: dict[str, SeqSet] = {}  # of the camera-minutes' buckets of camera_minute_events
        rolled: dict[str, dict[str, Any]] = {}
        stream_time = self.stream_time
        for d in decoded:
            record = d.record
            if record.timestamp_ms > stream_time.get(record.partition, 0):
                stream_time[record.partition] = record.timestamp_ms
            there = self._fold_groups(d.groups, buckets, touched, seqsets, rolled)
            oldest = self._oldest(record)
            events = result.events
            repeated = d.repeated
            for i, (event, planned) in enumerate(zip(d.items, d.plans, strict=True)):
                if planned and event.ts >= oldest:  # type: ignore[union-attr]  # the usual event: planned (never an error, never a reconcile), in time
                    new = not (there and event.seq in there.get((event.camera_id, event.minute), ()) or repeated and i in repeated)  # type: ignore[union-attr]
                    events.append((record, event, new))  # type: ignore[arg-type]
                    if new:
                        result.applied += 1
                    else:
                        result.duplicates += 1
                elif isinstance(event, EventError):
                    result.dead.append(DeadLetter.from_error(event, "streams", record.value, self.source_topic))
                elif event.type == "reconcile":
                    self._reconcile(record, event, result)
                elif event.ts < oldest:
                    events.append((record, event, False))
                    result.late.append((record, event))
                    result.dead.append(self._late(event, record))
                else:  # no folds (none of today's types)
                    events.append((record, event, False))
        for key, bucket in touched.items():
            if key in seqsets:
                bucket["seqs"] = seqsets[key].ranges
            buckets[key] = bucket  # one state write per bucket per batch
            result.rows[key] = self.row(bucket)
        for key, bucket in rolled.items():
            buckets[key] = bucket
            result.rows[key] = self.rollup_row(bucket)
        return result

    @staticmethod
    def _fold_groups(
        groups: dict[str, Group], buckets: MutableMapping[str, Any], touched: dict[str, dict[str, Any]],
        seqsets: dict[str, SeqSet], rolled: dict[str, dict[str, Any]],
    ) -> dict[tuple[str, int], set[int]]:
        """Fold one record's groups into their buckets (and hours and days); per (camera, minute), the seqs applied before (duplicates)."""
        there: dict[tuple[str, int], set[int]] = {}
        for key, group in groups.items():  # the dedupe: each event's camera-minute
            if group[0] is CAMERA_MINUTE_EVENTS:
                if key not in seqsets:
                    seqsets[key] = SeqSet(_minute_bucket(key, group, buckets, touched).get("seqs", ()))
                runs = group[4]
                # Ascending, the way add_many is quick (the runs of several event types interleave).
                seqs = runs[0][1] if len(runs) == 1 else sorted(seq for _, some in runs for seq in some)
                if dup := seqsets[key].add_many(seqs):
                    there[(group[3].camera_id, group[3].minute)] = set(dup)
        for key, group in groups.items():
            table, dims, rollups, first, runs = group
            bucket = _minute_bucket(key, group, buckets, touched)
            if there and (applied := there.get((first.camera_id, first.minute))):
                runs = [(ops, kept) for ops, some in runs if (kept := [seq for seq in some if seq not in applied])]
                if not runs:
                    continue
            low, high = min(min(some) for _, some in runs), max(max(some) for _, some in runs)
            bucket["events"] += sum(len(some) for _, some in runs)
            bucket["seq_first"] = low if bucket["seq_first"] is None else min(low, bucket["seq_first"])
            bucket["seq_last"] = high if bucket["seq_last"] is None else max(high, bucket["seq_last"])
            acc = bucket["acc"]
            for ops, some in runs:
                _fold(acc, ops, some)
                for rollup_key, rollup, period in rollups:
                    total = rolled.get(rollup_key)
                    if total is None:
                        stored = buckets.get(rollup_key)
                        total = rolled[rollup_key] = dict(stored) if stored else {
                            "table": rollup.spec.name, "camera_id": first.camera_id, "site": first.site, "dims": dims,
                            "minute": period, "last": period + rollup.span_ms - MINUTE_MS, "acc": {}, "events": 0,
                        }
                        total["acc"] = dict(total["acc"])
                    _fold(total["acc"], ops, some)
                    total["events"] += len(some)
        return there

    def _reconcile(self, record: Incoming, event: Event, result: BatchResult) -> None:
        # Not subject to lateness: it reopens no bucket, and after a long
        # outage it is what says which minutes came back whole; only a
        # minute past the retention has no row left to report on.
        if self.retention_ms and record.timestamp_ms - event.data["minute"] > self.retention_ms:
            result.events.append((record, event, False))
            result.late.append((record, event))
            result.dead.append(self._late(event, record, event.data["minute"]))
            return
        row = ledger_row(event)
        have = result.rows.get(row.key)
        if have is None or have.version < row.version:
            result.rows[row.key] = row
        result.events.append((record, event, True))
        result.applied += 1

    @staticmethod
    def rollup_row(bucket: dict[str, Any]) -> Row:
        rollup = ROLLUP_TABLES[bucket["table"]]
        values = {
            "camera_id": bucket["camera_id"], "site": bucket["site"], rollup.column: bucket["minute"], "geometry": "",
            **bucket["dims"], **finish(rollup.spec, bucket["acc"]), "events": bucket["events"],
        }
        return Row(rollup.spec.name, {c: values.get(c) for c in rollup.spec.columns})

    @staticmethod
    def row(bucket: dict[str, Any]) -> Row:
        table = TABLES[bucket["table"]]
        values = {
            "camera_id": bucket["camera_id"], "site": bucket["site"], "minute": bucket["minute"], "geometry": "",
            **bucket["dims"], **finish(table, bucket["acc"]),
            "events": bucket["events"], "seq_first": bucket["seq_first"], "seq_last": bucket["seq_last"],
        }
        return Row(table.name, {c: values.get(c) for c in table.columns})

    def _late(self, event: Event, record: Incoming, ts: int | None = None) -> DeadLetter:
        age_s = (record.timestamp_ms - (event.ts if ts is None else ts)) / 1000
        if self.retention_ms and age_s * 1000 > self.retention_ms:
            why = f"older than the tables keep ({self.retention_ms / 86_400_000:g} days, FLEETSIGHT_RETENTION_DAYS): its partition is dropped"
        else:
            why = f"the limit is {self.late_after_ms / 1000:.0f} s"
        return DeadLetter.build(
            Reason.LATE,
            f"{'reported minute' if ts is not None else 'event time'} is {age_s:.0f} s before its arrival; {why}",
            "streams",
            payload=record.value,
            source_topic=self.source_topic,
            camera_id=event.camera_id,
            seq=event.seq,
            ts=event.ts,
        )

    def horizon(self, partition: int, stream_time: int | None = None) -> int | None:
        """Buckets of ``partition`` that start before this minute are closed for good.

        An event is accepted only if its time is within ``late_after`` of its
        append time, and append times in a partition only grow, so a bucket
        that ended more than ``late_after`` (plus a minute of slack for
        clock steps) before the partition's stream time can never change.
        """
        now = max(self.stream_time.get(partition, 0), stream_time or 0)
        if not now:
            return None
        return now - self.late_after_ms - 2 * MINUTE_MS

    def prune(self, buckets: MutableMapping[str, Any], partition: int, owns: Callable[[str], bool]) -> list[str]:
        """Delete the closed buckets of ``partition`` (see :meth:`horizon`) from ``buckets``.

        ``owns(key)`` says whether a key belongs to ``partition``.
        """
        horizon = self.horizon(partition)
        if horizon is None:
            return []
        stale = [key for key, bucket in list(buckets.items()) if bucket and last_minute(bucket) < horizon and owns(key)]
        for key in stale:
            del buckets[key]
        return stale
