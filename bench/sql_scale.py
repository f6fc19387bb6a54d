"""SQL at the size of a fleet's history: the README's and the dashboards' queries on partitioned minutes and on the rollups.

Run: .venv/bin/python -m bench.sql_scale [--cameras 1000] [--days 90] [--reuse] [--keep]
(needs the local PostgreSQL: ``python -m devtools services up``; about 35 GB
of disk and 20-30 minutes of filling at the defaults on a 2-core box).

1. Writes a fleet's history straight into a database of its own
   (``fleetsight_bench_sql``, at the schema's head): ``--cameras`` cameras on
   50 sites, busy 08:00-20:00 UTC every day of ``--days`` days: a person row
   every busy minute (and a car row for one camera in five) in
   ``camera_minute_counts``, a line-crossing row in six busy minutes of ten,
   a zone row every busy minute; detector health and the reconciliation
   tables (a row per camera and minute, all day) for the last
   ``--health-days`` days only, which is all their queries read; the hour
   and day tables from the minutes, as the stream worker would have kept
   them. Rows go in in time order, as the sink writes them. Then prints each table's rows and size, and the disk a camera
   takes a year in each, at this density.
2. Times every README query and every Grafana panel query (a 6 h range, as
   the dashboard opens), median of 5 warm runs, with rows and buffers read
   from ``EXPLAIN (ANALYZE, BUFFERS)``; target: each <= 200 ms.
3. For the questions the rollups answer, times the same answer from the
   minute table (and checks that both give it).
4. The sink's upsert rate (rows/s) with the rows a worker sends for a
   minute of the whole fleet (on a day ahead, deleted afterwards): into
   this database (partitioned, full, hour and day rows included) against
   the baseline of a database at revision 0007 (unpartitioned, no rollups)
   written by that revision's upsert, in the same run; and the same rows
   again with every camera's line a door of its site (the site tables
   kept by the sink) against without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.settings import load_settings
from schemas.aggregates import ROLLUP_TABLES, ROLLUPS, TIME_PARTITIONED, Row
from schemas.codec import encode, validate
from sinks.db import make_engine, upgrade
from sinks.models import MODELS
from sinks.partitions import grain_of, next_start, partition_name, period_start
from sinks.rollups import insert_from
from sinks.writer import latest, upsert
from streams.aggregate import Incoming, MinuteAggregator

ROOT = Path(__file__).resolve().parent.parent

DB, OLD_DB = "fleetsight_bench_sql", "fleetsight_bench_sql_old"
TARGET_MS = 200.0
RUNS = 5
console = Console(width=150)

# Pseudo-random but repeatable per camera and minute: r in [0, 1000003).
R = "((c.n * 7919 + (extract(epoch FROM m)::bigint / 60) * 104729) % 1000003)::int"
BUSY = "generate_series(:day + interval '8 hours', :day + interval '20 hours' - interval '1 minute', interval '1 minute') m"
ALL_DAY = "generate_series(:day, :day + interval '1 day' - interval '1 minute', interval '1 minute') m"
GEOMETRY = "a1b2c3d4e5f60718"
FILL = {
    "camera_minute_counts": f"""
        INSERT INTO camera_minute_counts (camera_id, object_class, minute, site, objects, tracks_ended, dwell_mean_s, dwell_max_s, events)
        SELECT c.camera_id, cls, m, c.site, 1 + r % 4, r % 4, CASE WHEN r % 4 > 0 THEN 5 + r % 50 END,
               CASE WHEN r % 4 > 0 THEN 10 + r % 90 END, 1 + 2 * (r % 4)
        FROM bench_cameras c CROSS JOIN {BUSY} CROSS JOIN LATERAL (SELECT {R} AS r) x
        CROSS JOIN LATERAL unnest(CASE WHEN c.cars THEN ARRAY['person', 'car'] ELSE ARRAY['person'] END) cls ORDER BY m""",
    "line_minute_crossings": f"""
        INSERT INTO line_minute_crossings (camera_id, geometry, line, object_class, minute, site, crossings_in, crossings_out, events)
        SELECT c.camera_id, '{GEOMETRY}', 'door', 'person', m, c.site, 1 + r % 3, r % 2, 1 + r % 3 + r % 2
        FROM bench_cameras c CROSS JOIN {BUSY} CROSS JOIN LATERAL (SELECT {R} AS r) x WHERE r % 10 < 6 ORDER BY m""",
    "zone_minute_stats": f"""
        INSERT INTO zone_minute_stats (camera_id, geometry, zone, object_class, minute, site, entries, exits, dwell_mean_s, dwell_max_s,
                                       occupancy_mean, occupancy_max, occupancy_samples, events)
        SELECT c.camera_id, '{GEOMETRY}', 'till', 'person', m, c.site, r % 3, r % 3, CASE WHEN r % 3 > 0 THEN 20 + r % 100 END,
               CASE WHEN r % 3 > 0 THEN 40 + r % 200 END, (r % 7) / 2.0, r % 7, 2, 2 + 2 * (r % 3)
        FROM bench_cameras c CROSS JOIN {BUSY} CROSS JOIN LATERAL (SELECT {R} AS r) x ORDER BY m""",
}
RECENT = {  # the last --health-days only
    "camera_minute_health": f"""
        INSERT INTO camera_minute_health (camera_id, minute, site, reports, frames, frames_skipped, fps_mean, inference_ms_p50,
                                          inference_ms_p95, outbox_depth_max, events)
        SELECT c.camera_id, m, c.site, 2, 600, r % 300, 10.0, 30 + r % 10, 40 + r % 20, 0, 2
        FROM bench_cameras c CROSS JOIN {ALL_DAY} CROSS JOIN LATERAL (SELECT {R} AS r) x ORDER BY m""",
    "camera_minute_events": f"""
        INSERT INTO camera_minute_events (camera_id, minute, site, seq_first, seq_last, seq_digest, events)
        SELECT c.camera_id, m, c.site, r, r + 5, '0000000000000001', 6
        FROM bench_cameras c CROSS JOIN {ALL_DAY} CROSS JOIN LATERAL (SELECT {R} AS r) x ORDER BY m""",
    "camera_minute_ledger": f"""
        INSERT INTO camera_minute_ledger (camera_id, minute, site, events, seq_first, seq_last, seq_digest, totals, dropped,
                                          dropped_digest, dropped_totals, reported_at, version)
        SELECT c.camera_id, m, c.site, 6, r, r + 5, '0000000000000001', '{{"objects|person": 1, "health": 2}}', 0,
               '0000000000000000', '{{}}', m + interval '70 seconds', r + 6
        FROM bench_cameras c CROSS JOIN {ALL_DAY} CROSS JOIN LATERAL (SELECT {R} AS r) x ORDER BY m""",
    "camera_minute_reconciliation": f"""
        INSERT INTO camera_minute_reconciliation (camera_id, minute, site, state, differences, edge_events, cloud_events, checked_at)
        SELECT c.camera_id, m, c.site, CASE WHEN r % 5000 = 0 THEN 'pending' ELSE 'match' END, '{{}}', 6, 6, m + interval '2 minutes'
        FROM bench_cameras c CROSS JOIN {ALL_DAY} CROSS JOIN LATERAL (SELECT {R} AS r) x ORDER BY m""",
}
FLEET = """
    CREATE TABLE bench_cameras AS
    SELECT format('cam-%s', lpad(n::text, 4, '0')) AS camera_id, n, format('site-%s', lpad((n % 50)::text, 2, '0')) AS site,
           n % 5 = 0 AS cars
    FROM generate_series(0, $1 - 1) n;
    INSERT INTO camera_status (camera_id, site, online, last_heard_at, last_event_at, outbox_backlog, seq_received, seq_gaps, version)
    SELECT camera_id, site, n % 97 <> 0, now() - (n % 60) * interval '1 second', now(), 0, 1000000, 0, 1 FROM bench_cameras;
    INSERT INTO camera_geometry (camera_id, geometry, site, definition, first_seen, last_seen, version)
    SELECT camera_id, 'a1b2c3d4e5f60718', site,
           '{"lines": [{"name": "door", "a": [0.1, 0.5], "b": [0.9, 0.5], "entrance": "in"}], "zones": []}',
           now() - interval '100 days', now(), 1 FROM bench_cameras;
    -- A closed offline alert per camera and week, and an open one for the cameras offline now.
    INSERT INTO alerts (alert_id, camera_id, site, kind, subject, state, opened_at, closed_at, detail, version)
    SELECT c.camera_id || '|offline||' || w, c.camera_id, c.site, 'offline', '', 'closed', now() - w * interval '7 days',
           now() - w * interval '7 days' + interval '10 minutes', 'no events for 120 s', 2
    FROM bench_cameras c, generate_series(1, $2 / 7) w;
    INSERT INTO alerts (alert_id, camera_id, site, kind, subject, state, opened_at, closed_at, detail, version)
    SELECT camera_id || '|offline||now', camera_id, site, 'offline', '', 'open', now() - interval '20 minutes', NULL, 'no events for 120 s', 1
    FROM bench_cameras WHERE n % 97 = 0;
    INSERT INTO late_events (camera_id, seq, site, event_ts, type, arrived_at, age_s)
    SELECT camera_id, 1, site, now() - interval '30 hours', 'track.start', now() - interval '2 hours', 100800 FROM bench_cameras WHERE n % 10 = 0;
"""
# Each camera's door is an entrance of its site (20 doors a site): a site's
# minutes from its doors' person crossings, each day from zero, as the sink
# keeps them (sinks/site_occupancy.py), then its hours and days.
SITE_MINUTES = """
    INSERT INTO site_minute_occupancy (site, minute, day, people_in, people_out, inside, peak, net, corrected, complete)
    SELECT site, minute, :day, people_in, people_out, net + corrected,
           greatest(net + corrected, lag(net + corrected, 1, 0) OVER w), net, corrected, true
    FROM (SELECT f.*, greatest(0, max(-net) OVER w) AS corrected
          FROM (SELECT site, minute, people_in, people_out, sum(people_in - people_out) OVER w AS net
                FROM (SELECT site, minute, sum(crossings_in) AS people_in, sum(crossings_out) AS people_out FROM line_minute_crossings
                      WHERE object_class = 'person' AND line = 'door' AND minute >= :day AND minute < :day + interval '1 day'
                      GROUP BY site, minute) flows
                WINDOW w AS (PARTITION BY site ORDER BY minute)) f
          WINDOW w AS (PARTITION BY site ORDER BY minute)) x
    WINDOW w AS (PARTITION BY site ORDER BY minute) ORDER BY minute"""
SITE_ROLLUP = """
    INSERT INTO {table} (site, {period}, people_in, people_out, inside, peak, corrected, complete)
    SELECT site, {grouped}, sum(people_in), sum(people_out), (array_agg(inside ORDER BY minute DESC))[1], max(peak),
           (array_agg(corrected ORDER BY minute DESC))[1], bool_and(complete)
    FROM site_minute_occupancy WHERE minute >= :start AND minute < :end GROUP BY 1, 2 ORDER BY 2"""
SITE_ROLLUPS = [
    SITE_ROLLUP.format(table="site_hour_occupancy", period="hour", grouped="date_trunc('hour', minute, 'UTC')"),
    SITE_ROLLUP.format(table="site_day_occupancy", period="day", grouped="day"),
]
# The questions the rollups answer, each also asked of the minutes: (name, on the rollup, on the minutes).
PAIRS = [
    ("people per site per day, this quarter",
     "SELECT site, day, sum(objects) AS people FROM camera_day_counts "
     "WHERE object_class = 'person' AND day >= date_trunc('quarter', now(), 'UTC') GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT site, date_trunc('day', minute, 'UTC') AS day, sum(objects) AS people FROM camera_minute_counts "
     "WHERE object_class = 'person' AND minute >= date_trunc('quarter', now(), 'UTC') GROUP BY 1, 2 ORDER BY 1, 2"),
    ("busiest hour per site, last week",
     "SELECT DISTINCT ON (site) site, hour, sum(objects) AS objects FROM camera_hour_counts WHERE hour >= date_trunc('hour', now(), 'UTC') - interval '7 days' "
     "GROUP BY site, hour ORDER BY site, objects DESC, hour",
     "SELECT DISTINCT ON (site) site, date_trunc('hour', minute, 'UTC') AS hour, sum(objects) AS objects FROM camera_minute_counts "
     "WHERE minute >= date_trunc('hour', now(), 'UTC') - interval '7 days' GROUP BY 1, 2 ORDER BY site, objects DESC, hour"),
    ("crossings in and out per camera, today",
     "SELECT camera_id, line, sum(crossings_in) AS i, sum(crossings_out) AS o FROM line_day_crossings "
     "WHERE day = date_trunc('day', now(), 'UTC') GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT camera_id, line, sum(crossings_in) AS i, sum(crossings_out) AS o FROM line_minute_crossings "
     "WHERE minute >= date_trunc('day', now(), 'UTC') GROUP BY 1, 2 ORDER BY 1, 2"),
    ("zone entries per site and day, last 90 days",
     "SELECT site, day, sum(entries) AS entries FROM zone_day_stats WHERE day >= date_trunc('day', now(), 'UTC') - interval '89 days' GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT site, date_trunc('day', minute, 'UTC') AS day, sum(entries) AS entries FROM zone_minute_stats "
     "WHERE minute >= date_trunc('day', now(), 'UTC') - interval '89 days' GROUP BY 1, 2 ORDER BY 1, 2"),
]


def admin_dsn(database: str) -> str:
    base = load_settings().postgres_dsn.rsplit("/", 1)[0]
    return re.sub(r"//[^@/]*@", "//postgres@", base) + f"/{database}"


def url_of(database: str) -> str:
    return admin_dsn(database).replace("postgresql://", "postgresql+asyncpg://")


async def create(database: str, revision: str = "head") -> None:
    admin = await asyncpg.connect(admin_dsn("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade, url_of(database), revision)


async def partitions_back(conn: asyncpg.Connection, since: datetime) -> None:
    """Partitions from ``since`` up to those the migration made (history the bench writes into)."""
    for table in TIME_PARTITIONED:
        grain = grain_of(table)
        oldest = await conn.fetchval(
            "SELECT min(substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \\(''([^'']+)''')::timestamptz) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass", table)
        start = period_start(grain, since)
        while oldest is not None and start < oldest:
            end = next_start(grain, start)
            await conn.execute(f"CREATE TABLE {partition_name(table, grain, start)} PARTITION OF {table} "
                               f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            start = end


async def fill(cameras: int, days: int, health_days: int) -> None:
    conn = await asyncpg.connect(admin_dsn(DB))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days - 1)
    await partitions_back(conn, first)
    await conn.execute(FLEET.replace("$1", str(cameras)).replace("$2", str(days)))
    await conn.close()
    jobs = [(sql, first + timedelta(days=d)) for d in range(days) for sql in FILL.values()]
    jobs += [(sql, today - timedelta(days=d)) for d in range(health_days) for sql in RECENT.values()]
    months = []
    month = first.replace(day=1)
    while month <= today:
        months.append(month)
        month = next_start("month", month)
    with Progress(console=console) as progress:
        task = progress.add_task(f"writing {days} days of {cameras} cameras", total=len(jobs))
        queue: asyncio.Queue[tuple[str, datetime]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        async def writer() -> None:  # two at a time: one per core
            c = await asyncpg.connect(admin_dsn(DB))
            try:
                while not queue.empty():
                    sql, day = queue.get_nowait()
                    await c.execute(re.sub(r":day\b", "$1::timestamptz", sql), day)
                    progress.advance(task)
            finally:
                await c.close()

        await asyncio.gather(writer(), writer())
        rollup_task = progress.add_task("hour and day tables from the minutes", total=len(months) * (6 + len(SITE_ROLLUPS)))
        site_task = progress.add_task("site minutes from the doors' crossings", total=days)
        conn = await asyncpg.connect(admin_dsn(DB))
        for d in range(days):
            await conn.execute(re.sub(r":day\b", "$1::timestamptz", SITE_MINUTES), first + timedelta(days=d))
            progress.advance(site_task)
        for month in months:
            end = next_start("month", month)
            for hour, day in ROLLUPS.values():
                for rollup in (hour, day):  # the day from the hours just written
                    await conn.execute(re.sub(r":start\b", "$1", re.sub(r":end\b", "$2", insert_from(rollup))), month, end)
                    progress.advance(rollup_task)
            for sql in SITE_ROLLUPS:
                await conn.execute(re.sub(r":start\b", "$1", re.sub(r":end\b", "$2", sql)), month, end)
                progress.advance(rollup_task)
        await conn.execute("ANALYZE")
        await conn.close()


async def sizes(cameras: int, days: int, health_days: int) -> None:
    conn = await asyncpg.connect(admin_dsn(DB))
    table = Table(title=f"Sizes: {cameras} cameras, {days} days (health and reconciliation: {health_days} days)")
    for column in ("table", "rows", "size", "bytes/row", "rows per camera-year", "disk per camera-year"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name in TIME_PARTITIONED:
        rows, size = await conn.fetchrow(
            "SELECT coalesce(sum(c.reltuples), 0)::bigint, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass", name)
        recent = name in RECENT or (name in ROLLUP_TABLES and ROLLUP_TABLES[name].base.name in RECENT)
        span = health_days if recent else days
        per_year = rows / cameras / span * 365 if rows else 0
        per_row = size / rows if rows else 0
        table.add_row(name, f"{rows:,}", f"{size / 2**30:.2f} GiB", f"{per_row:.0f}", f"{per_year:,.0f}", f"{per_year * per_row / 2**20:.0f} MiB")
    console.print(table)
    await conn.close()


def _read(plan: dict) -> tuple[int, int]:
    """Rows read by the scans of a plan (returned and filtered out), and the partitions they scanned."""
    rows, scanned = 0, 0
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Relation Name" in node:
            loops = node.get("Actual Loops", 1)
            rows += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
            scanned += 1
        stack.extend(node.get("Plans", []))
    return rows, scanned


async def timed(conn: asyncpg.Connection, sql: str) -> tuple[float, int, int, int, list]:
    """Median ms of warm runs, rows read, partitions scanned, buffers (hit + read), and the result.

    ``conn`` keeps no prepared statements (:func:`unprepared`): each run is
    parsed and planned again, as psql and Grafana run a query. (Timed as a
    cached prepared statement, a query over 97 partitions left out the
    4-16 ms its planning costs them.)
    """
    [explained] = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
    rows, scanned = _read(explained["Plan"])
    buffers = explained["Plan"].get("Shared Hit Blocks", 0) + explained["Plan"].get("Shared Read Blocks", 0)
    times = []
    result: list = []
    for _ in range(RUNS):
        started = time.perf_counter()
        result = await conn.fetch(sql)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows, scanned, buffers, [tuple(r) for r in result]


def pinned(sql: str, at: datetime) -> str:
    """``sql`` with every ``now()`` fixed at ``at``."""
    return sql.replace("now()", f"'{at.isoformat()}'::timestamptz")


async def unprepared() -> asyncpg.Connection:
    """A connection that plans every statement when it runs (no statement cache)."""
    return await asyncpg.connect(admin_dsn(DB), statement_cache_size=0)


def dashboard_queries(at: datetime | None = None) -> dict[str, str]:
    """The panels' queries over the dashboard's 6 hours to ``at``, as Grafana sends them: its time macros
    become literal timestamps (so PostgreSQL prunes partitions while planning)."""
    end = at or datetime.now(UTC)
    span = f"'{(end - timedelta(hours=6)).isoformat()}' AND '{end.isoformat()}'"
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "fleet.json").read_text())
    out = {}
    for panel in board["panels"]:
        for target in panel["targets"]:
            out[f"panel: {panel['title']}"] = re.sub(r"\$__timeFilter\(([\w.]+)\)", rf"\1 BETWEEN {span}", target["rawSql"])
    return out


def readme_queries() -> dict[str, str]:
    """The README's queries and its answers to the questions the rollups do not answer (a camera of the fill for its example one)."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"```sql\n\s*-- (query|question): ([\w-]+)\n(.*?)```", text, re.S)
    return {f"README {kind}: {name}": body.strip().replace("'cam-entrance'", "'cam-0001'") for kind, name, body in found}


async def queries() -> bool:
    conn = await unprepared()
    table = Table(title=f"Queries (median of {RUNS} warm runs; rows and partitions from EXPLAIN ANALYZE; target <= {TARGET_MS:.0f} ms)")
    for column in ("query", "ms", "rows read", "partitions", "buffers", "ok"):
        table.add_column(column, justify="left" if column == "query" else "right", overflow="fold")
    ok = True
    for name, sql in {**readme_queries(), **dashboard_queries()}.items():
        ms, rows, scanned, buffers, _ = await timed(conn, sql)
        ok &= ms <= TARGET_MS
        table.add_row(name, f"{ms:.1f}", f"{rows:,}", str(scanned), f"{buffers:,}", "yes" if ms <= TARGET_MS else "[red]NO[/]")
    console.print(table)
    pairs = Table(title="The same answer from the rollup and from the minutes")
    for column in ("question", "rollup ms", "rows read", "minutes ms", "rows read", "minutes / rollup", "same answer"):
        pairs.add_column(column, justify="left" if column == "question" else "right", overflow="fold")
    for name, on_rollup, on_minutes in PAIRS:
        # One moment for both: with now() each took its window when it ran, and a
        # fill that crossed UTC midnight between the two gave two dates (a false "NO").
        at = await conn.fetchval("SELECT now()")
        r_ms, r_rows, _, _, r_result = await timed(conn, pinned(on_rollup, at))
        m_ms, m_rows, _, _, m_result = await timed(conn, pinned(on_minutes, at))
        same = r_result == m_result
        ok &= same and r_ms <= TARGET_MS
        pairs.add_row(name, f"{r_ms:.1f}", f"{r_rows:,}", f"{m_ms:.0f}", f"{m_rows:,}", f"{m_ms / r_ms:.0f}x", "yes" if same else "[red]NO[/]")
    console.print(pairs)
    await conn.close()
    return ok


def fleet_minute(cameras: int, minute_ms: int, seq0: int) -> list[Incoming]:
    """A minute of the whole fleet as a worker batch sees it: per camera a record of typical events."""
    records = []
    for n in range(cameras):
        camera = f"cam-{n:04d}"
        site = f"site-{n % 50:02d}"
        events = []
        for i, (type_, data) in enumerate([
            ("track.start", {"track_id": seq0, "class": "person", "confidence": 0.9}),
            ("line.cross", {"track_id": seq0, "class": "person", "line": "door", "direction": "in", "geometry": GEOMETRY}),
            ("zone.enter", {"track_id": seq0, "class": "person", "zone": "till", "geometry": GEOMETRY}),
            ("occupancy", {"zone": "till", "counts": {"person": 2}, "geometry": GEOMETRY}),
            ("health", {"uptime_s": 60.0, "fps": 10.0, "frames": 600, "frames_skipped": 100, "outbox_depth": 0}),
        ]):
            events.append(validate({"v": 1, "camera_id": camera, "site": site, "seq": seq0 + i, "ts": minute_ms + 1000 * i, "type": type_, "data": data}))
        records.append(Incoming(n % 12, minute_ms + 30_000, encode(events)))
    return records


async def upsert_rate(cameras: int, minutes: int) -> None:
    """rows/s of the sink's upsert: the full partitioned database (rollups included) against revision 0007's layout."""
    await create(OLD_DB, "0007")
    # Minutes of a day ahead (its partitions are made), deleted again afterwards: the
    # queries above, and a --reuse, see the history as filled.
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=3)
    base = int(day.timestamp() * 1000) + 12 * 3600_000
    batches = []
    aggregator, state = MinuteAggregator(24 * 3600_000), {}
    for m in range(minutes):
        result = aggregator.process(fleet_minute(cameras, base + m * 60_000, 1_000_000 + m * 10), state)
        batches.append(list(result.rows.values()))
    rollup_tables = {r.spec.name for pair in ROLLUPS.values() for r in pair}
    conn = await asyncpg.connect(admin_dsn(OLD_DB))
    old_columns: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"):
        old_columns.setdefault(r["table_name"], set()).add(r["column_name"])
    await conn.close()
    results = {}
    door = '{"lines": [{"name": "door", "a": [0.1, 0.5], "b": [0.9, 0.5], "entrance": "in"}], "zones": []}'
    for label, database, write, keep, doors in (
        ("before: 0007's layout and upsert (VALUES, 500 rows a statement)", OLD_DB,
         lambda engine, rows: values_upsert(engine, rows, old_columns), lambda t: t not in rollup_tables, None),
        ("now: partitioned, full history, minute rows only (no doors)", DB, upsert, lambda t: t not in rollup_tables, "{}"),
        ("now: partitioned, full history, with hour and day rows (no doors)", DB, upsert, lambda t: True, "{}"),
        # The same rows again (their upserts change nothing now): what keeping the site tables adds.
        ("now: the same, every camera a door of its site (site tables kept)", DB, upsert, lambda t: True, door),
    ):
        if doors is not None:
            conn = await asyncpg.connect(admin_dsn(DB))
            await conn.execute("UPDATE camera_geometry SET definition = $1::jsonb", doors)
            await conn.close()
        engine = make_engine(url_of(database))
        written, started = 0, time.perf_counter()
        for rows in batches:
            written += await write(engine, [r for r in rows if keep(r.table) and r.table != "camera_status"])
        elapsed = time.perf_counter() - started
        await engine.dispose()
        results[label] = written / elapsed
        console.print(f"sink upsert, {label}: {written:,} rows in {elapsed:.1f} s = {written / elapsed:,.0f} rows/s, "
                      f"{elapsed / minutes * 1000:.0f} ms a fleet-minute")
    conn = await asyncpg.connect(admin_dsn(DB))
    for table, (column, _) in TIME_PARTITIONED.items():
        await conn.execute(f"DELETE FROM {table} WHERE {column} >= $1 AND {column} < $2", day, day + timedelta(days=1))
    await conn.close()
    old = next(iter(results.values()))
    for label, rate in list(results.items())[1:]:
        console.print(f"  rows/s, {label} / before: {rate / old:.2f}")


async def values_upsert(engine: AsyncEngine, rows: list[Row], columns: dict[str, set[str]]) -> int:
    """The baseline: the sink's upsert up to revision 0007 (multi-row VALUES through SQLAlchemy, 500 rows a
    statement), of the ``columns`` each table had then (later revisions added some)."""
    written = 0
    async with engine.begin() as conn:
        for table, items in sorted(latest(rows).items()):
            spec = items[0].spec
            items.sort(key=lambda r: tuple(str(r.values[k]) for k in spec.key))  # noqa: B023
            model = MODELS[table]
            had = columns[table]
            values = [{c: datetime.fromtimestamp(v / 1000, tz=UTC) if c in spec.times and v is not None else v
                       for c, v in r.values.items() if c in had} for r in items]
            for start in range(0, len(values), 500):
                stmt = pg_insert(model).values(values[start:start + 500])
                updates = {c: stmt.excluded[c] for c in spec.values if c in had} | {"updated_at": func.now()}
                stmt = stmt.on_conflict_do_update(index_elements=list(spec.key), set_=updates,
                                                  where=getattr(model, str(spec.version)) < stmt.excluded[str(spec.version)])
                await conn.execute(stmt)
            written += len(values)
    return written


async def main() -> int:
    global DB
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--health-days", type=int, default=2)
    parser.add_argument("--upsert-minutes", type=int, default=20, help="minutes of the fleet the upsert rate is measured on")
    parser.add_argument("--reuse", action="store_true", help="keep the database a previous run filled")
    parser.add_argument("--database", default=DB, help=f"the database it fills (default {DB}; dropped first unless --reuse)")
    parser.add_argument("--keep", action="store_true", help="leave the filled database behind (for --reuse)")
    args = parser.parse_args()
    DB = args.database
    started = time.perf_counter()
    if not args.reuse:
        await create(DB)
        await fill(args.cameras, args.days, args.health_days)
        console.print(f"filled in {time.perf_counter() - started:.0f} s")
    await sizes(args.cameras, args.days, args.health_days)
    ok = await queries()
    await upsert_rate(args.cameras, args.upsert_minutes)
    admin = await asyncpg.connect(admin_dsn("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{OLD_DB}" WITH (FORCE)')
    if args.keep:
        console.print(f"kept {DB} for --reuse (DROP DATABASE {DB} when done)")
    else:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await admin.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
