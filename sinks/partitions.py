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
one transaction per table, and dropped after ``DETACH PARTITION ...
CONCURRENTLY``, outside any transaction. A plain ``DETACH`` wants the
parent to itself: behind a long report it waited out its ``lock_timeout``
while every sink write queued behind it, then failed the whole job, and
the rollback took the partitions made ahead with it (issue 38). The
concurrent one takes a lock that readers and writers pass, then waits for
the queries that can still see the partition; cut short, it leaves the
partition "detach pending", and the next run finishes it (``FINALIZE``).
Whatever does not get its lock is tried again a few times and then left
for the next run, named in the report (:attr:`Report.deferred`), while
the rest of the job goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.aggregates import TIME_PARTITIONED

log = logging.getLogger("fleetsight.partitions")

# A partition is dropped only when its end is a day past the retention:
# clocks differ between the worker that accepts an event and the sink that
# drops, and rows can wait in Kafka between them.
DROP_GRACE = timedelta(days=1)
LOCK_TIMEOUT = "5s"
RETRY_PAUSE_S = 1.0
# How long a concurrent detach waits for the queries that can still see its
# partition, and how often a busy table is tried: the sink's hourly run
# holds its rows meanwhile, so once and briefly; the daily ``fleetsight db
# partitions`` (JOB_*) longer. Cut short, a drop is finished by a later run.
DETACH_WAIT_S = 2.0
JOB_DETACH_WAIT_S = 60.0
JOB_TRIES = 3
DROPPING = "fleetsight: past its retention, being dropped"  # the comment on a partition on its way out
_BUSY = ("55P03", "57014")  # lock_timeout, statement_timeout (a concurrent detach that waited too long)
# table resolution -> how its partitions are cut
GRAIN = {"minute": "day", "hour": "month", "day": "year"}


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: MINVALUE (a table that was there before partitioning, attached whole)
    end: datetime
    pending: bool = False  # a concurrent detach was cut short: it is on its way out


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


def keeps_from(now: datetime, retention_days: int) -> datetime | None:
    """The oldest time a table with this retention keeps (None: it keeps everything)."""
    return now - timedelta(days=retention_days) if retention_days else None


def past_retention(table: str, moment: datetime, now: datetime, retention_days: int) -> bool:
    """Whether the partition holding ``moment`` ends before what ``table`` keeps: maintenance
    drops it once its day of grace (:data:`DROP_GRACE`) is over."""
    kept = keeps_from(now, retention_days)
    grain = grain_of(table)
    return kept is not None and next_start(grain, period_start(grain, moment)) <= kept


def plan(
    table: str, existing: Iterable[Partition], now: datetime, retention_days: int, ahead_days: int, back_to: datetime | None = None,
    floor: datetime | None = None,
) -> Plan:
    """What to make and drop: every period from the newest partition (or today) to ``ahead_days`` on, and
    back to ``back_to`` (a row older than the oldest partition) if the retention keeps that and it is not
    before ``floor`` (where a drop reached: see :func:`maintain`); drops what is past the retention."""
    grain = grain_of(table)
    existing = sorted(existing, key=lambda p: p.end)
    out = Plan()
    kept = keeps_from(now, retention_days)
    oldest = existing[0].start if existing else period_start(grain, now)
    if back_to is not None and oldest is not None and back_to < oldest and (kept is None or back_to >= kept):
        # A fresh install, and an edge with a backlog from before it: its days are made too
        # (never those a drop took: a process keeping longer would make them again for the next to drop).
        start = period_start(grain, back_to) if floor is None else max(period_start(grain, back_to), floor)
        out.create += _periods(table, grain, start, oldest)
    # On from the newest there is, whatever its age: no overlap, and no hole a
    # late row could fall into (days past the retention are dropped next time).
    start = existing[-1].end if existing else period_start(grain, now)
    out.create += _periods(table, grain, start, next_start(grain, period_start(grain, now + timedelta(days=ahead_days))))
    if kept is not None:
        out.drop = [p for p in existing if p.end <= kept - DROP_GRACE]
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
    SELECT parent.relname AS parent, child.relname AS child, pg_get_expr(child.relpartbound, child.oid) AS bound,
           i.inhdetachpending AS pending
    FROM pg_inherits i
    JOIN pg_class parent ON parent.oid = i.inhparent
    JOIN pg_class child ON child.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = parent.relnamespace
    WHERE n.nspname = current_schema() AND parent.relname = ANY(:tables)
""")


def bounds_of(found: dict[str, list[Partition]]) -> dict[str, tuple[datetime | None, datetime]]:
    """Per table: the start of its oldest partition that stays and the end of its newest."""
    out = {}
    for table, parts in found.items():
        live = [p for p in parts if not p.pending]
        if live:
            out[table] = (live[0].start, live[-1].end)
    return out


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
        found[row.parent].append(Partition(row.child, start, datetime.fromisoformat(bound[2]).astimezone(UTC), row.pending))
    for parts in found.values():
        parts.sort(key=lambda p: p.end)
    return found


@dataclass
class Report:
    created: list[tuple[str, str]] = field(default_factory=list)  # (table, partition)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    # table -> (start of its oldest partition, None for MINVALUE; end of its newest)
    bounds: dict[str, tuple[datetime | None, datetime]] = field(default_factory=dict)
    # (table, what waits and why): steps left for the next run, their table busy
    deferred: list[tuple[str, str]] = field(default_factory=list)


_LOCK = "hashtext('fleetsight.partitions')"


async def maintain(
    engine: AsyncEngine, retention_of: Callable[[str], int], ahead_days: int, now: datetime | None = None,
    back_to: dict[str, datetime] | None = None, detach_wait_s: float = DETACH_WAIT_S, tries: int = 1,
) -> Report:
    """Make the partitions due, then drop those past their retention (see the module docstring).

    Several sinks and the daily job may run this at once: an advisory lock
    takes them one at a time. A table that stays busy through ``tries``
    tries is left for the next run and named in the report; what was made
    stays made.
    """
    now = now or datetime.now(UTC)
    report = Report()
    async with engine.connect() as session:
        # Autocommit: a concurrent detach runs outside any transaction. So the
        # advisory lock and the lock timeout are the session's, undone at the end.
        session = await session.execution_options(isolation_level="AUTOCOMMIT")
        try:
            await session.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
            await session.execute(text(f"SELECT pg_advisory_lock({_LOCK})"))
            try:
                await _run(session, engine, report, now, retention_of, ahead_days, back_to or {}, detach_wait_s, tries)
            finally:
                await session.execute(text(f"SELECT pg_advisory_unlock({_LOCK})"))
                await session.execute(text("RESET ALL"))  # the pool hands this connection to the sink's writes next
        except BaseException:
            # Not back to the pool: it may still hold the lock (every other maintenance
            # would wait on it) or the lock timeout (the sink's writes would run under it).
            await session.invalidate()
            raise
    if report.created or report.dropped:
        log.info("partitions: made %d (%s), dropped %d (%s)", len(report.created), _brief(report.created),
                 len(report.dropped), _brief(report.dropped))
    for table, what in report.deferred:
        log.warning("partitions of %s: %s", table, what)
    return report


async def _run(
    session: AsyncConnection, engine: AsyncEngine, report: Report, now: datetime, retention_of: Callable[[str], int],
    ahead_days: int, back_to: dict[str, datetime], detach_wait_s: float, tries: int,
) -> None:
    """The maintenance itself, under the lock: per table, make what is due, then drop what is past the retention."""
    async with engine.connect() as conn, conn.begin():
        found = await existing(conn)
        floors = await _floors(conn)
    for table, parts in found.items():
        kept = [p for p in parts if not p.pending]
        floor, kept_at = floors.get(table, (None, None))
        if kept_at is not None and kept_at != retention_of(table):
            log.warning(
                "%s was last cut back keeping %d days; this process keeps %d (FLEETSIGHT_RETENTION_DAYS): "
                "give every process the same, or the shortest decides", table, kept_at, retention_of(table),
            )
        todo = plan(table, kept, now, retention_of(table), ahead_days, back_to.get(table), floor)
        if todo.create and await _tried(session, table, "making " + _brief([(table, p.name) for p in todo.create]), report, tries,
                                        _make, engine, table, todo.create):
            report.created += [(table, p.name) for p in todo.create]
            kept += todo.create
        # Those a cut-short run left pending first: another concurrent detach waits for them.
        for p in [p for p in parts if p.pending] + todo.drop:
            if not await _tried(session, table, f"dropping {p.name}", report, tries, _drop, session, table, p, retention_of(table),
                                detach_wait_s):
                break  # the table is busy: its other drops wait for the next run too
            report.dropped.append((table, p.name))
            if p in kept:
                kept.remove(p)
        report.bounds.update(bounds_of({table: sorted(kept, key=lambda p: p.end)}))
    for table in await _leftovers(session):
        if await _tried(session, table, f"dropping {table}", report, tries, _drop_table, session, table):
            report.dropped.append((table, table))


async def _tried(
    session: AsyncConnection, table: str, what: str, report: Report, tries: int, step: Callable[..., Awaitable[None]], *args: Any,
) -> bool:
    """Run ``step(*args)`` (a change to ``table``), up to ``tries`` times while the table is busy; False, and in
    ``report.deferred``, if it stayed busy."""
    for attempt in range(1, tries + 1):
        try:
            await step(*args)
            return True
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _BUSY:
                raise
            if attempt < tries:
                await asyncio.sleep(RETRY_PAUSE_S)  # a pause between tries, not a wait on anything in particular
    holders = await _holders(session, table)
    report.deferred.append((table, f"{what} left for the next run: the table stayed busy ({tries} {'try' if tries == 1 else 'tries'}){holders}"))
    return False


async def _make(engine: AsyncEngine, table: str, create: list[Partition]) -> None:
    """Make and attach ``create``, in one transaction of their own."""
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        for p in create:
            assert p.start is not None  # plan() makes bounded periods only
            # Made apart, then attached: ATTACH locks the parent far less than CREATE ... PARTITION OF.
            await conn.execute(text(f'CREATE TABLE "{p.name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'))
            await conn.execute(text(
                f"""ALTER TABLE "{table}" ATTACH PARTITION "{p.name}" """
                f"""FOR VALUES FROM ('{p.start.isoformat()}') TO ('{p.end.isoformat()}')"""
            ))


async def _drop(session: AsyncConnection, table: str, p: Partition, days: int, wait_s: float) -> None:
    """Detach ``p`` from ``table`` without holding its writers up, raise the table's floor (dropped at ``days``), drop it.

    Where an earlier try left it: attached, detach pending (a wait cut
    short: finished with ``FINALIZE``), or detached already (only its drop
    did not get its lock).
    """
    pending = (await session.execute(_PENDING, {"name": p.name})).scalar()
    if pending is not None:
        if not pending:
            # Marked first: if the drop below does not get its lock, the next run knows the detached table as ours.
            await session.execute(text(f"""COMMENT ON TABLE "{p.name}" IS '{DROPPING}'"""))
        await session.execute(text(f"SET statement_timeout = '{int(wait_s * 1000)}ms'"))
        try:
            await session.execute(text(f'ALTER TABLE "{table}" DETACH PARTITION "{p.name}" {"FINALIZE" if pending else "CONCURRENTLY"}'))
        finally:
            await session.execute(text("SET statement_timeout = 0"))
    await session.execute(_RAISE_FLOOR, {"table": table, "end": p.end, "days": days})
    await _drop_table(session, p.name)


_PENDING = text("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = CAST(:name AS regclass)")


async def _drop_table(session: AsyncConnection, name: str) -> None:
    await session.execute(text(f'DROP TABLE "{name}"'))


_FLOORS = text("SELECT table_name, dropped_before, retention_days FROM partition_floors")
_RAISE_FLOOR = text("""
    INSERT INTO partition_floors (table_name, dropped_before, retention_days) VALUES (:table, :end, :days)
    ON CONFLICT (table_name) DO UPDATE SET dropped_before = greatest(partition_floors.dropped_before, excluded.dropped_before),
        retention_days = excluded.retention_days, updated_at = now()
""")


async def _floors(conn: AsyncConnection) -> dict[str, tuple[datetime, int]]:
    """Per table, where drops reached and at what retention (none before revision 0012)."""
    if not (await conn.execute(text("SELECT to_regclass('partition_floors') IS NOT NULL"))).scalar():
        return {}
    return {r.table_name: (r.dropped_before.astimezone(UTC), r.retention_days) for r in await conn.execute(_FLOORS)}


_LEFTOVERS = text("""
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
      AND obj_description(c.oid, 'pg_class') = :comment
""")


async def _leftovers(session: AsyncConnection) -> list[str]:
    """Partitions detached on their way out whose drop did not get its lock."""
    return list((await session.execute(_LEFTOVERS, {"comment": DROPPING})).scalars())


_HOLDERS = text(r"""
    SELECT DISTINCT a.pid, a.state, now() - a.xact_start AS open_for, left(regexp_replace(a.query, '\s+', ' ', 'g'), 80) AS query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.pid <> pg_backend_pid()
      AND l.relation IN (SELECT CAST(:table AS regclass) UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = CAST(:table AS regclass))
    ORDER BY open_for DESC NULLS LAST LIMIT 3
""")


async def _holders(session: AsyncConnection, table: str) -> str:
    """Who holds ``table`` (or a partition of it) now, for the message: the long report to look at."""
    rows = (await session.execute(_HOLDERS, {"table": table})).all()
    held = "; ".join(f"pid {r.pid} ({r.state}, open {r.open_for}): {r.query}" for r in rows)
    return f"; held by {held}" if held else ""


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
