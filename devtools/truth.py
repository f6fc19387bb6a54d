"""The ground-truth oracle: what SQL must hold for the events the cameras recorded.

Computed here, independently of the stream worker, from the events alone:
each ``(camera_id, seq)`` once, every count in its event-time minute. The
demo, the chaos harness and the integration tests all compare SQL with this
one function, in the same flat form: ``(table, *key, column) -> value``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.codec import Event

Truth = Counter[tuple[Any, ...]]  # (table, *key, column) -> value; zero values left out


@dataclass(frozen=True)
class Table:
    """An aggregate table, its key columns (in SQL) and the counted columns."""

    name: str
    key_sql: str
    columns: tuple[str, ...]


_MS = "(extract(epoch FROM minute) * 1000)::bigint"
TABLES = (
    Table("camera_minute_counts", f"camera_id, object_class, {_MS}", ("objects", "tracks_ended")),
    Table("line_minute_crossings", f"camera_id, geometry, line, object_class, {_MS}", ("crossings_in", "crossings_out")),
    Table("zone_minute_stats", f"camera_id, geometry, zone, object_class, {_MS}", ("entries", "exits", "occupancy_samples")),
    Table("camera_minute_health", f"camera_id, {_MS}", ("reports",)),
)


def as_event(event: Event | Mapping[str, Any]) -> Event:
    """An :class:`Event` from an event or its wire dict (as tests build them)."""
    if isinstance(event, Event):
        return event
    return Event(event["camera_id"], event["site"], event["seq"], event["ts"], event["type"], dict(event.get("data", {})))


def expected(events: Iterable[Event | Mapping[str, Any]]) -> Truth:
    """What each aggregate table must hold for ``events`` (duplicates counted once)."""
    out: Truth = Counter()
    unique = {(e.camera_id, e.seq): e for e in map(as_event, events)}
    for e in unique.values():
        d, m = e.data, e.minute
        g = d.get("geometry", "")  # the version of the lines and zones; '' from nodes without
        if e.type == "track.start":
            out["camera_minute_counts", e.camera_id, d["class"], m, "objects"] += 1
        elif e.type == "track.end":
            out["camera_minute_counts", e.camera_id, d["class"], m, "tracks_ended"] += 1
        elif e.type == "line.cross":
            out["line_minute_crossings", e.camera_id, g, d["line"], d["class"], m, "crossings_" + d["direction"]] += 1
        elif e.type in ("zone.enter", "zone.exit"):
            column = "entries" if e.type == "zone.enter" else "exits"
            out["zone_minute_stats", e.camera_id, g, d["zone"], d["class"], m, column] += 1
        elif e.type == "occupancy":
            for cls in d["counts"]:
                out["zone_minute_stats", e.camera_id, g, d["zone"], cls, m, "occupancy_samples"] += 1
        elif e.type == "health":
            out["camera_minute_health", e.camera_id, m, "reports"] += 1
    return out


def objects_per_minute(truth: Truth) -> Counter[tuple[Any, ...]]:
    """``(camera, class, minute) -> objects``: the projection most tests compare."""
    return Counter({key[1:4]: n for key, n in truth.items() if key[0] == "camera_minute_counts" and key[-1] == "objects"})


async def in_sql(conn: asyncpg.Connection, cameras: list[str], tables: Iterable[Table] = TABLES) -> Truth:
    """What the aggregate ``tables`` (default: all) hold for ``cameras``, in the oracle's form."""
    out: Truth = Counter()
    for table in tables:
        rows = await conn.fetch(
            f"SELECT {table.key_sql}, {', '.join(table.columns)} FROM {table.name} WHERE camera_id = ANY($1)", cameras
        )
        for row in rows:
            key = tuple(row[i] for i in range(len(row) - len(table.columns)))
            for column in table.columns:
                if row[column]:
                    out[(table.name, *key, column)] = row[column]
    return out


async def in_sql_once(dsn: str, cameras: list[str]) -> Truth:
    """:func:`in_sql` on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await in_sql(conn, cameras)
    finally:
        await conn.close()


@dataclass
class Comparison:
    """SQL against the truth: each difference, and the events lost and counted twice."""

    mismatches: list[str]
    lost: int
    double: int


def compare(want: Truth, have: Truth) -> Comparison:
    """Every key where SQL and the truth differ."""
    result = Comparison([], 0, 0)
    for key in sorted(set(want) | set(have), key=repr):
        w, h = want.get(key, 0), have.get(key, 0)
        if w != h:
            result.mismatches.append(f"{key[0]} {key[1:-1]} {key[-1]}: SQL {h}, truth {w}")
            if h < w:
                result.lost += w - h
            else:
                result.double += h - w
    return result


def since(now: Truth, before: Truth) -> Truth:
    """What changed from ``before`` to ``now`` (the rows a run added to a shared database)."""
    return Counter({key: now[key] - before[key] for key in set(now) | set(before) if now[key] != before[key]})
