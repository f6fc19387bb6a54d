"""Rows of the public SQL tables, as stream processors emit them and sinks write them.

Each row carries its absolute value, never a delta, plus a version
column that only grows for a given key: for the per-minute tables it is
``events``, the number of distinct (camera, seq) events folded into the row.
A sink keeps the row with the largest version, which makes replays and
partial recounts after a crash change nothing. Times travel as milliseconds
since the epoch (UTC) and are stored as ``timestamptz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    values: tuple[str, ...]
    times: frozenset[str] = frozenset()
    version: str | None = "events"  # None: a row is written once and never changes

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.values


CAMERA_MINUTE_COUNTS = TableSpec(
    "camera_minute_counts",
    key=("camera_id", "object_class", "minute"),
    values=("site", "objects", "tracks_ended", "dwell_mean_s", "dwell_max_s", "events"),
    times=frozenset({"minute"}),
)
# ``geometry``: the version of the camera's lines and zones (schemas/geometry.py),
# "" for events of nodes that send none; a moved line is a new key.
LINE_MINUTE_CROSSINGS = TableSpec(
    "line_minute_crossings",
    key=("camera_id", "geometry", "line", "object_class", "minute"),
    values=("site", "crossings_in", "crossings_out", "events"),
    times=frozenset({"minute"}),
)
ZONE_MINUTE_STATS = TableSpec(
    "zone_minute_stats",
    key=("camera_id", "geometry", "zone", "object_class", "minute"),
    values=(
        "site", "entries", "exits", "dwell_mean_s", "dwell_max_s",
        "occupancy_mean", "occupancy_max", "occupancy_samples", "events",
    ),
    times=frozenset({"minute"}),
)
CAMERA_MINUTE_HEALTH = TableSpec(
    "camera_minute_health",
    key=("camera_id", "minute"),
    values=(
        "site", "reports", "frames", "frames_skipped", "fps_mean",
        "inference_ms_p50", "inference_ms_p95", "outbox_depth_max", "people_seen", "people_overlapping", "crowding", "events",
    ),
    times=frozenset({"minute"}),
)
CAMERA_STATUS = TableSpec(
    "camera_status",
    key=("camera_id",),
    values=(
        "site", "online", "last_heard_at", "last_event_at", "outbox_backlog", "outbox_age_s",
        "dropped_events", "seq_first", "seq_last", "seq_received", "seq_gaps", "model_version", "clock_offset_s",
        "video_state", "video_reconnects", "video_lost_s", "tamper", "frames_missed", "frames_missed_share", "crowding", "version",
    ),
    times=frozenset({"last_heard_at", "last_event_at"}),
    version="version",
)
ALERTS = TableSpec(
    "alerts",
    key=("alert_id",),
    values=("camera_id", "site", "kind", "subject", "state", "opened_at", "closed_at", "detail", "version"),
    times=frozenset({"opened_at", "closed_at"}),
    version="version",
)
# Reconciliation (schemas/ledger.py): what the cloud applied per camera-minute,
# and what the camera says it recorded (its latest ``reconcile`` event wins).
CAMERA_MINUTE_EVENTS = TableSpec(
    "camera_minute_events",
    key=("camera_id", "minute"),
    values=("site", "seq_first", "seq_last", "seq_digest", "events"),
    times=frozenset({"minute"}),
)
CAMERA_MINUTE_LEDGER = TableSpec(
    "camera_minute_ledger",
    key=("camera_id", "minute"),
    values=(
        "site", "events", "seq_first", "seq_last", "seq_digest", "totals",
        "dropped", "dropped_digest", "dropped_totals", "reported_at", "version",
    ),
    times=frozenset({"minute", "reported_at"}),
    version="version",  # the seq of the reconcile event
)
CAMERA_GEOMETRY = TableSpec(
    "camera_geometry",
    key=("camera_id", "geometry"),
    values=("site", "definition", "first_seen", "last_seen", "version"),
    times=frozenset({"first_seen", "last_seen"}),
    version="version",
)
LATE_EVENTS = TableSpec(
    "late_events",
    key=("camera_id", "seq"),
    values=("site", "event_ts", "type", "arrived_at", "age_s"),
    times=frozenset({"event_ts", "arrived_at"}),
    version=None,
)



# --- hour and day rollups -------------------------------------------------------------

HOUR_MS = 3_600_000
DAY_MS = 86_400_000  # a UTC day: Unix time has no leap seconds, so days start at multiples of this


@dataclass(frozen=True)
class Rollup:
    """An hour or day table that sums a per-minute table, kept by the stream worker like the minutes.

    Its row of a period holds the same sums (means weighted by what they
    average) over the period's minutes, and ``events`` counts the distinct
    events folded in, as the minutes' ``events`` do: the worker adds an event
    to the period only when it is new to its minute, so the version grows as
    the minute's does and a replay changes nothing.
    """

    spec: TableSpec
    base: TableSpec
    column: str  # "hour" or "day": the start of the period, UTC
    span_ms: int

    def period(self, minute_ms: int) -> int:
        """Start of the period holding ``minute_ms``."""
        return minute_ms - minute_ms % self.span_ms


def _rollup(base: TableSpec, name: str, column: str, span_ms: int) -> Rollup:
    def swap(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(column if n == "minute" else n for n in names)

    return Rollup(TableSpec(name, key=swap(base.key), values=base.values, times=frozenset({column})), base, column, span_ms)


ROLLUPS: dict[str, tuple[Rollup, ...]] = {
    base.name: (_rollup(base, f"{prefix}_hour_{suffix}", "hour", HOUR_MS), _rollup(base, f"{prefix}_day_{suffix}", "day", DAY_MS))
    for base, prefix, suffix in (
        (CAMERA_MINUTE_COUNTS, "camera", "counts"), (LINE_MINUTE_CROSSINGS, "line", "crossings"), (ZONE_MINUTE_STATS, "zone", "stats"),
        (CAMERA_MINUTE_HEALTH, "camera", "health"),
    )
}
ROLLUP_TABLES: dict[str, Rollup] = {r.spec.name: r for rollups in ROLLUPS.values() for r in rollups}

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        CAMERA_MINUTE_COUNTS, LINE_MINUTE_CROSSINGS, ZONE_MINUTE_STATS, CAMERA_MINUTE_HEALTH,
        CAMERA_STATUS, ALERTS, LATE_EVENTS, CAMERA_MINUTE_EVENTS, CAMERA_MINUTE_LEDGER, CAMERA_GEOMETRY,
        *(r.spec for r in ROLLUP_TABLES.values()),
    )
}


@dataclass(frozen=True)
class Row:
    """The absolute value of one row of ``table``."""

    table: str
    values: dict[str, Any]

    @property
    def spec(self) -> TableSpec:
        return TABLES[self.table]

    @property
    def key(self) -> str:
        """Kafka key: the table and the row's primary key."""
        return "|".join([self.table, *(str(self.values[k]) for k in self.spec.key)])

    @property
    def version(self) -> int:
        column = self.spec.version
        return int(self.values[column]) if column else 0

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "row": self.values}

    def to_record(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Row:
        spec = TABLES.get(obj.get("table"))  # type: ignore[arg-type]
        if spec is None:
            raise ValueError(f"unknown table {obj.get('table')!r}")
        row = obj["row"]
        missing = [c for c in spec.columns if c not in row]
        if missing:
            raise ValueError(f"{spec.name} row lacks {', '.join(missing)}")
        return cls(spec.name, {c: row[c] for c in spec.columns})


def encode_rows(rows: list[Row]) -> bytes:
    """Many rows in one Kafka record: per-record overhead, not per-row, is
    what limits a stream processor's output. (msgspec: compact JSON, several
    times json's speed; the worker sends every row a batch touches.)"""
    return msgspec.json.encode({"v": 1, "rows": [r.to_dict() for r in rows]})


def decode_rows(value: bytes) -> list[Row]:
    try:
        obj = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("rows"), list):
        raise ValueError("not a row batch of version 1")
    return [Row.from_dict(r) for r in obj["rows"]]


# Tables split by time into partitions (sinks/partitions.py): table -> (time
# column, resolution). A table's retention is set by its resolution or by name
# (``FLEETSIGHT_RETENTION_DAYS``).
RESOLUTIONS = ("minute", "hour", "day")
TIME_PARTITIONED: dict[str, tuple[str, str]] = {
    **{t.name: ("minute", "minute") for t in (
        CAMERA_MINUTE_COUNTS, LINE_MINUTE_CROSSINGS, ZONE_MINUTE_STATS, CAMERA_MINUTE_HEALTH, CAMERA_MINUTE_EVENTS, CAMERA_MINUTE_LEDGER,
    )},
    "camera_minute_reconciliation": ("minute", "minute"),
    # Site occupancy (sinks/site_occupancy.py): kept by the sink, not sent as rows.
    "site_minute_occupancy": ("minute", "minute"), "site_hour_occupancy": ("hour", "hour"), "site_day_occupancy": ("day", "day"),
    **{r.spec.name: (r.column, r.column) for r in ROLLUP_TABLES.values()},
}
