"""Time partitions of the per-minute and rollup tables: made ahead of time, dropped after their retention.

Per-minute tables are split by UTC day, hour rollups by month, day rollups
by year (``schemas.aggregates.TIME_PARTITIONED``). :func:`plan` is the pure
part: which partitions to make and which to drop, given what exists, the
retention (``FLEETSIGHT_RETENTION_DAYS``) and the time. :func:`maintain`
applies it; the sink runs it every ``FLEETSIGHT_PARTITION_MAINTENANCE_EVERY_S``
and when a row falls past the newest partition, and ``fleetsight db
upgrade`` / ``fleetsight db partitions`` run it once.

Why our own task and not pg_partman with pg_cron (Debian ships both): the
two are server extensions, so every PostgreSQL we run on (the Debian
cluster of ``services up``, the compose image, a managed database) would
need them installed, and pg_cron needs ``shared_preload_libraries`` and a
server restart; our rule is three lines of date arithmetic that the stream
worker must know anyway (an event older than the oldest partition takes the
late path), and the sink that writes the rows is already the one process
that must never meet a missing partition. The one thing partman adds that
we would want, a default partition, is deliberately absent: rows there
block making the partition they belong to.

Partitions are made as plain tables and then attached (``ATTACH
PARTITION`` takes a lock that lets reads and writes of the parent go on),
and dropped after ``DETACH``; both under a short ``lock_timeout``, so a long
query holding the parent makes maintenance wait for its next turn instead
of queueing every writer behind it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.aggregates import TIME_PARTITIONED

log = logging.getLogger("fleetsight.partitions")

# A partition is dropped only when its end is a day past the retention:
# clocks differ between the worker that accepts an event and the sink that
# drops, and rows can wait in Kafka between them.
DROP_GRACE = timedelta(days=1)
LOCK_TIMEOUT = "5s"
# table resolution -> how its partitions are cut
GRAIN = {"minute": "day", "hour": "month", "day": "year"}


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: MINVALUE (a table that was there before partitioning, attached whole)
    end: datetime


@dataclass
class Plan:
    create: list[Partition] = field(default_factory=list)
    drop: list[Partition] = field(default_factory=list)


def period_start(grain: str, moment: datetime) -> datetime:
    """Start of the day, month or year (UTC) holding ``moment``."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def next_start(grain: str, start: datetime) -> datetime:
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "month":
        return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.replace(year=start.year + 1)


def partition_name(table: str, grain: str, start: datetime) -> str:
    stamp = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}[grain]
    return f"{table}_p{start.strftime(stamp)}"


def grain_of(table: str) -> str:
    return GRAIN[TIME_PARTITIONED[table][1]]


def plan(
    table: str, existing: Iterable[Partition], now: datetime, retention_days: int, ahead_days: int, back_to: datetime | None = None,
) -> Plan:
    """What to make and drop: every period from the newest partition (or today) to ``ahead_days`` on, and
    back to ``back_to`` (a row older than the oldest partition) if the retention keeps that; drops
    what is past the retention."""
    grain = grain_of(table)
    existing = sorted(existing, key=lambda p: p.end)
    out = Plan()
    keeps_from = now - timedelta(days=retention_days) if retention_days else None
    oldest = existing[0].start if existing else period_start(grain, now)
    if back_to is not None and oldest is not None and back_to < oldest and (keeps_from is None or back_to >= keeps_from):
        # A fresh install, and an edge with a backlog from before it: its days are made too.
        out.create += _periods(table, grain, period_start(grain, back_to), oldest)
    # On from the newest there is, whatever its age: no overlap, and no hole a
    # late row could fall into (days past the retention are dropped next time).
    start = existing[-1].end if existing else period_start(grain, now)
    out.create += _periods(table, grain, start, next_start(grain, period_start(grain, now + timedelta(days=ahead_days))))
    if keeps_from is not None:
        out.drop = [p for p in existing if p.end <= keeps_from - DROP_GRACE]
    return out


def _periods(table: str, grain: str, start: datetime, until: datetime) -> list[Partition]:
    out = []
    while start < until:
        end = next_start(grain, start)
        out.append(Partition(partition_name(table, grain, start), start, end))
        start = end
    return out


# --- reading and changing the database ----------------------------------------------

_BOUND = re.compile(r"FROM \((?:'([^']+)'|MINVALUE)\) TO \('([^']+)'\)")
_EXISTING = text("""
    SELECT parent.relname AS parent, child.relname AS child, pg_get_expr(child.relpartbound, child.oid) AS bound
    FROM pg_inherits i
    JOIN pg_class parent ON parent.oid = i.inhparent
    JOIN pg_class child ON child.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = parent.relnamespace
    WHERE n.nspname = current_schema() AND parent.relname = ANY(:tables)
""")


def bounds_of(found: dict[str, list[Partition]]) -> dict[str, tuple[datetime | None, datetime]]:
    return {table: (parts[0].start, parts[-1].end) for table, parts in found.items() if parts}


_PARENTS = text("""
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'p' AND c.relname = ANY(:tables)
""")


async def existing(conn: AsyncConnection) -> dict[str, list[Partition]]:
    """The partitions of each partitioned table there is (none before revision 0008), oldest first (bounds read in UTC)."""
    await conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    found: dict[str, list[Partition]] = {t: [] for t in (await conn.execute(_PARENTS, {"tables": list(TIME_PARTITIONED)})).scalars()}
    for row in await conn.execute(_EXISTING, {"tables": list(TIME_PARTITIONED)}):
        bound = _BOUND.search(row.bound)
        if bound is None:
            log.warning("partition %s of %s has bounds we do not read: %s", row.child, row.parent, row.bound)
            continue
        start = datetime.fromisoformat(bound[1]).astimezone(UTC) if bound[1] else None
        found[row.parent].append(Partition(row.child, start, datetime.fromisoformat(bound[2]).astimezone(UTC)))
    for parts in found.values():
        parts.sort(key=lambda p: p.end)
    return found


@dataclass
class Report:
    created: list[tuple[str, str]] = field(default_factory=list)  # (table, partition)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    # table -> (start of its oldest partition, None for MINVALUE; end of its newest)
    bounds: dict[str, tuple[datetime | None, datetime]] = field(default_factory=dict)


async def maintain(
    engine: AsyncEngine, retention_of: Callable[[str], int], ahead_days: int, now: datetime | None = None,
    back_to: dict[str, datetime] | None = None,
) -> Report:
    """Make the partitions due and drop those past their retention, in one transaction.

    Several sinks may run this at once: a transaction-level advisory lock
    takes them one at a time.
    """
    now = now or datetime.now(UTC)
    report = Report()
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('fleetsight.partitions'))"))
        for table, parts in (await existing(conn)).items():
            todo = plan(table, parts, now, retention_of(table), ahead_days, (back_to or {}).get(table))
            for p in todo.create:
                assert p.start is not None  # plan() makes bounded periods only
                # Made apart, then attached: ATTACH locks the parent far less than CREATE ... PARTITION OF.
                await conn.execute(text(
                    f'CREATE TABLE "{p.name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                ))
                await conn.execute(text(
                    f"""ALTER TABLE "{table}" ATTACH PARTITION "{p.name}" """
                    f"""FOR VALUES FROM ('{p.start.isoformat()}') TO ('{p.end.isoformat()}')"""
                ))
                report.created.append((table, p.name))
            for p in todo.drop:
                await conn.execute(text(f'ALTER TABLE "{table}" DETACH PARTITION "{p.name}"'))
                await conn.execute(text(f'DROP TABLE "{p.name}"'))
                report.dropped.append((table, p.name))
            kept = sorted([p for p in parts if p not in todo.drop] + todo.create, key=lambda p: p.end)
            report.bounds.update(bounds_of({table: kept}))
    if report.created or report.dropped:
        log.info("partitions: made %d (%s), dropped %d (%s)", len(report.created), _brief(report.created),
                 len(report.dropped), _brief(report.dropped))
    return report


def _brief(made: list[tuple[str, str]]) -> str:
    names = [name for _, name in made]
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"


@dataclass(frozen=True)
class TableSize:
    table: str
    partitions: int
    start: datetime | None
    end: datetime
    rows: int  # the planner's estimate (pg_class.reltuples), as of the last ANALYZE
    bytes: int


async def sizes(engine: AsyncEngine) -> list[TableSize]:
    """Per partitioned table: its partitions, the span they cover, rows and disk."""
    async with engine.begin() as conn:
        found = await existing(conn)
        out = []
        for table, parts in found.items():
            if not parts:
                continue
            rows, size = (await conn.execute(text(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)"
            ), {"t": table})).one()
            out.append(TableSize(table, len(parts), parts[0].start, parts[-1].end, rows, size))
    return out
