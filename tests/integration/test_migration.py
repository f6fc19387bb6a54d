"""Upgrading a database with data to partitioned minute tables and rollup tables (revision 0008)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from devtools.sandbox import admin_dsn
from runtime.settings import Settings
from schemas.codec import MINUTE_MS, encode, validate
from sinks.db import upgrade
from streams.aggregate import Incoming, MinuteAggregator

pytestmark = pytest.mark.integration

MINUTE_TABLES = (
    "camera_minute_counts", "line_minute_crossings", "zone_minute_stats", "camera_minute_health",
    "camera_minute_events", "camera_minute_ledger", "camera_minute_reconciliation",
)
# 4 cameras x 2 classes, one row every 17 minutes over 120 days: ~80,000 minute rows per table,
# older than the 90 days kept as well as today's.
POPULATE = """
    INSERT INTO camera_minute_counts (camera_id, object_class, minute, site, objects, tracks_ended, dwell_mean_s, dwell_max_s, events)
    SELECT 'cam-' || c, cls, m, 'site-' || (c % 2), (c + extract(minute FROM m))::int % 5, (c * 3 + extract(hour FROM m))::int % 4,
           CASE WHEN (c * 3 + extract(hour FROM m))::int % 4 > 0 THEN 1.5 + c END, CASE WHEN (c * 3 + extract(hour FROM m))::int % 4 > 0 THEN 9.0 + c END,
           1 + (c + extract(minute FROM m))::int % 5 + (c * 3 + extract(hour FROM m))::int % 4
    FROM generate_series(0, 3) c, unnest(ARRAY['person', 'car']) cls,
         generate_series(date_trunc('minute', now()) - interval '120 days', date_trunc('minute', now()) - interval '4 minutes', interval '17 minutes') m;
    INSERT INTO line_minute_crossings (camera_id, geometry, line, object_class, minute, site, crossings_in, crossings_out, events)
    SELECT camera_id, CASE WHEN minute < now() - interval '60 days' THEN '' ELSE 'g1' END, 'door', object_class, minute, site,
           objects, tracks_ended, objects + tracks_ended + 1
    FROM camera_minute_counts;
    INSERT INTO zone_minute_stats (camera_id, geometry, zone, object_class, minute, site, entries, exits, dwell_mean_s, dwell_max_s,
                                   occupancy_mean, occupancy_max, occupancy_samples, events)
    SELECT camera_id, 'g1', 'till', object_class, minute, site, objects, tracks_ended, dwell_mean_s, dwell_max_s,
           objects / 2.0, objects, 2, objects + tracks_ended + 2
    FROM camera_minute_counts;
    INSERT INTO camera_minute_health (camera_id, minute, site, reports, frames, frames_skipped, fps_mean, inference_ms_p50, inference_ms_p95, events)
    SELECT camera_id, minute, site, 2, 600, 100 + objects, 10.0 - objects, 30.0 + objects, 40.0 + objects, 2
    FROM camera_minute_counts WHERE object_class = 'person';
    INSERT INTO camera_minute_events (camera_id, minute, site, seq_first, seq_last, seq_digest, events)
    SELECT camera_id, minute, site, 1, 5, '0000000000000001', 5 FROM camera_minute_counts WHERE object_class = 'person';
    INSERT INTO camera_minute_ledger (camera_id, minute, site, events, seq_first, seq_last, seq_digest, totals, dropped, dropped_digest,
                                      dropped_totals, reported_at, version)
    SELECT camera_id, minute, site, 5, 1, 5, '0000000000000001', '{}', 0, '0000000000000000', '{}', minute, 9
    FROM camera_minute_counts WHERE object_class = 'person';
    INSERT INTO camera_minute_reconciliation (camera_id, minute, site, state, differences, edge_events, cloud_events, checked_at)
    SELECT camera_id, minute, site, 'match', '{}', 5, 5, now() FROM camera_minute_counts WHERE object_class = 'person';
    INSERT INTO stream_cameras (app, camera_id, partition, state)
    SELECT 'fleetsight', 'cam-' || c, c, '{}' FROM generate_series(0, 3) c;
"""


@pytest.fixture
async def database(services: Settings) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    name = f"fs_mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn(services))
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(admin_dsn(services, name))
    try:
        yield admin_dsn(services, name).replace("postgresql://", "postgresql+asyncpg://"), conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def _bucket(camera: str, minute: datetime, objects: int, events: int) -> tuple[str, str, int, int, str]:
    ms = int(minute.timestamp() * 1000)
    state = {"table": "camera_minute_counts", "camera_id": camera, "site": "site-0", "dims": {"object_class": "person"},
             "minute": ms, "acc": {"objects": objects}, "seqs": [[1000, 1000 + events - 1]]}
    return "fleetsight", f"{camera}|camera_minute_counts|person|{ms}", 0, ms, json.dumps(state)


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in MINUTE_TABLES}


SUMS = {
    ("camera_minute_counts", "camera_id, object_class", "sum(objects), sum(tracks_ended), max(dwell_max_s), sum(events)"):
        ("camera_hour_counts", "camera_day_counts", "objects, tracks_ended, dwell_max_s, events"),
    ("line_minute_crossings", "camera_id, geometry, line, object_class", "sum(crossings_in), sum(crossings_out), sum(events)"):
        ("line_hour_crossings", "line_day_crossings", "crossings_in, crossings_out, events"),
    ("zone_minute_stats", "camera_id, geometry, zone, object_class", "sum(entries), sum(exits), max(occupancy_max), sum(occupancy_samples), sum(events)"):
        ("zone_hour_stats", "zone_day_stats", "entries, exits, occupancy_max, occupancy_samples, events"),
    ("camera_minute_health", "camera_id", "sum(reports), sum(frames), sum(frames_skipped), sum(events)"):
        ("camera_hour_health", "camera_day_health", "reports, frames, frames_skipped, events"),
}


async def test_upgrade_keeps_every_row_fills_the_rollups_and_hands_the_worker_its_open_hours(database) -> None:
    url, conn = database
    await asyncio.to_thread(upgrade, url, "0007")
    await conn.execute(POPULATE)
    # The worker's state: one minute the sink never got, one it got an older version of. The first is
    # the minute after the newest one written: never one of POPULATE's (every 17 minutes). A fixed
    # "now - 3 minutes" taken at import fell on one of them when the test ran minutes later (CI, stop 32).
    in_flight = await conn.fetchval(
        "SELECT max(minute) + interval '1 minute' FROM camera_minute_counts WHERE camera_id = 'cam-0' AND object_class = 'person'")
    stale = await conn.fetchval("SELECT max(minute) FROM camera_minute_counts WHERE camera_id = 'cam-1' AND object_class = 'person'")
    stale_events = await conn.fetchval(
        "SELECT events FROM camera_minute_counts WHERE camera_id = 'cam-1' AND object_class = 'person' AND minute = $1", stale)
    await conn.executemany(
        "INSERT INTO stream_buckets (app, key, partition, minute, state) VALUES ($1, $2, $3, $4, $5::jsonb)",
        [_bucket("cam-0", in_flight, 7, 7), _bucket("cam-1", stale, 40, stale_events + 40)],
    )
    before = await _counts(conn)

    await asyncio.to_thread(upgrade, url)

    after = await _counts(conn)
    assert after == {**before, "camera_minute_counts": before["camera_minute_counts"] + 1}
    assert await conn.fetchval(
        "SELECT objects FROM camera_minute_counts WHERE camera_id = 'cam-0' AND object_class = 'person' AND minute = $1", in_flight) == 7
    assert await conn.fetchval(
        "SELECT objects FROM camera_minute_counts WHERE camera_id = 'cam-1' AND object_class = 'person' AND minute = $1", stale) == 40
    for table in MINUTE_TABLES:
        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = $1", table) == "p", table
        assert await conn.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", table) >= 8, table
    # Every hour and day holds exactly the sums of its minutes.
    for (minute_table, dims, sums), (hour_table, day_table, columns) in SUMS.items():
        for table, period in ((hour_table, "hour"), (day_table, "day")):
            expected = await conn.fetch(
                f"SELECT {dims}, date_trunc('{period}', minute, 'UTC') AS t, {sums} FROM {minute_table} GROUP BY {dims}, t ORDER BY {dims}, t")
            got = await conn.fetch(f"SELECT {dims}, {period} AS t, {columns} FROM {table} ORDER BY {dims}, t")
            assert [tuple(r) for r in got] == [tuple(r) for r in expected], table
    # Weighted means: the day's dwell is the mean over its tracks.
    assert await conn.fetchval("""
        SELECT count(*) FROM camera_day_counts d JOIN (
            SELECT camera_id, object_class, date_trunc('day', minute, 'UTC') AS day,
                   sum(dwell_mean_s * tracks_ended) / nullif(sum(tracks_ended), 0) AS dwell
            FROM camera_minute_counts GROUP BY 1, 2, 3) m USING (camera_id, object_class, day)
        WHERE d.dwell_mean_s IS DISTINCT FROM m.dwell AND abs(d.dwell_mean_s - m.dwell) > 1e-9""") == 0
    assert await conn.fetchval("SELECT count(*) FROM fleet_overview") == 0  # the view is back (over camera_status)

    # The worker carries on from SQL: a new event of the in-flight hour adds one to that hour and day.
    state = {r["key"]: json.loads(r["state"]) for r in await conn.fetch("SELECT key, state FROM stream_buckets WHERE app = 'fleetsight'")}
    hour_row = await conn.fetchrow(
        "SELECT objects, events FROM camera_hour_counts WHERE camera_id = 'cam-0' AND object_class = 'person' AND hour = $1",
        in_flight.replace(minute=0))
    day_row = await conn.fetchrow(
        "SELECT objects, events FROM camera_day_counts WHERE camera_id = 'cam-0' AND object_class = 'person' AND day = $1",
        in_flight.replace(hour=0, minute=0))
    ts = int(in_flight.timestamp() * 1000) + MINUTE_MS // 2
    event = validate({"v": 1, "camera_id": "cam-0", "site": "site-0", "seq": 5000, "ts": ts, "type": "track.start",
                      "data": {"track_id": 1, "class": "person", "confidence": 0.9}})
    result = MinuteAggregator(24 * 3600_000).process([Incoming(0, ts + 1000, encode([event]))], state)
    rows = {r.table: r.values for r in result.rows.values()}
    assert (rows["camera_hour_counts"]["objects"], rows["camera_hour_counts"]["events"]) == (hour_row["objects"] + 1, hour_row["events"] + 1)
    assert (rows["camera_day_counts"]["objects"], rows["camera_day_counts"]["events"]) == (day_row["objects"] + 1, day_row["events"] + 1)

    head = await conn.fetchval("SELECT version_num FROM alembic_version")
    with pytest.raises(RuntimeError, match="cannot be undone"):
        await asyncio.to_thread(_downgrade, url)
    assert await conn.fetchval("SELECT version_num FROM alembic_version") == head  # nothing of the downgrade stays


def _downgrade(url: str) -> None:
    from alembic import command

    from sinks.db import alembic_config

    command.downgrade(alembic_config(url), "0007")
