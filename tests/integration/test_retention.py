"""History on the real pipeline: a backlog from before the install, the retention's late path, partitions made and dropped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from runtime.waiting import wait_for
from tests.support import Stack, event, publish

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


async def test_a_backlog_lands_in_minute_hour_and_day_and_past_the_retention_goes_late(stack_factory) -> None:
    # Minutes kept 3 days, late events accepted for 10: a 5-day-old event would land in a dropped partition.
    stack: Stack = await stack_factory(retention_days={"minute": 3}, late_after_s=10 * 86400.0)
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    cam = "hist-a"
    now = int(time.time() * 1000)
    backlog = [event(cam, seq, now - 2 * DAY_MS + seq * 1000) for seq in range(1, 6)]  # from before the database was made
    too_old = event(cam, 6, now - 5 * DAY_MS)
    live = [event(cam, seq, now) for seq in range(7, 10)]
    publish(stack.settings, [(stack.settings.mqtt_topics.events(cam), json.dumps(backlog + [too_old] + live).encode())])

    async def landed() -> bool:
        stack.assert_running()
        rows = await stack.query("SELECT sum(objects) AS n FROM camera_day_counts WHERE camera_id = $1", cam)
        late = await stack.query("SELECT seq FROM late_events WHERE camera_id = $1", cam)
        return rows[0]["n"] == len(backlog) + len(live) and [r["seq"] for r in late] == [6]

    await wait_for(landed, 90, "the backlog and the live events in the day table, the too-old one in late_events")
    want = Counter(e["ts"] // DAY_MS for e in backlog + live)
    for table, column in (("camera_minute_counts", "minute"), ("camera_hour_counts", "hour"), ("camera_day_counts", "day")):
        rows = await stack.query(f"SELECT {column} AS t, objects FROM {table} WHERE camera_id = $1", cam)
        got: Counter = Counter()
        for r in rows:
            got[int(r["t"].timestamp() * 1000) // DAY_MS] += r["objects"]
        assert got == want, table
    # The backlog's day got partitions of its own, made by the sink when the rows came; the reconciler's
    # verdicts on those minutes need one too.
    two_days_ago = datetime.fromtimestamp((now - 2 * DAY_MS) / 1000, tz=UTC)
    for table in ("camera_minute_counts", "camera_minute_events", "camera_minute_reconciliation"):  # every per-minute table alike
        assert await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", f"{table}_p{two_days_ago:%Y%m%d}"), table
    [letter] = [d for d in await stack.deadletters(expect=1) if d.get("seq") == 6]
    assert letter["reason"] == "late" and "FLEETSIGHT_RETENTION_DAYS" in letter["detail"], letter

    # Maintenance drops what is past the retention: a partition of 5 days ago, made by hand, goes.
    old = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
    name = f"camera_minute_counts_p{old:%Y%m%d}"
    await stack.query(
        f"CREATE TABLE {name} PARTITION OF camera_minute_counts FOR VALUES FROM ('{old.isoformat()}') TO ('{(old + timedelta(days=1)).isoformat()}')")
    env = {**os.environ, **stack.settings.env()}
    done = subprocess.run([sys.executable, "-m", "fleetsight", "db", "partitions"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "camera_minute_counts" in done.stdout and "3 days" in done.stdout, done.stdout
    assert not await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", name)
    stack.assert_running()


async def test_maintenance_behind_a_long_report_holds_no_writer_up_keeps_what_it_made_and_finishes_later(stack: Stack) -> None:
    """A report reading a partition past its retention: its drop waits (writers pass), what is due is made, and a later run drops it."""
    from sinks.db import make_engine
    from sinks.partitions import maintain

    table = "camera_minute_counts"
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    old = today - timedelta(days=5)
    name = f"{table}_p{old:%Y%m%d}"
    await stack.query(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{old.isoformat()}') TO ('{(old + timedelta(days=1)).isoformat()}')")
    ahead = f"{table}_p{today + timedelta(days=9):%Y%m%d}"  # further than the migration makes them
    assert not await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", ahead)

    report_conn = await asyncpg.connect(stack.dsn)  # an analyst's long report, still open
    writer = await asyncpg.connect(stack.dsn)
    engine = make_engine(stack.settings.database_url)
    try:
        await report_conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await report_conn.fetch(f"SELECT count(*) FROM {table}")
        job = asyncio.create_task(maintain(engine, lambda t: 3, ahead_days=9, detach_wait_s=3.0, tries=2))

        async def detaching() -> bool:
            return bool(await stack.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE%DETACH PARTITION%' AND state = 'active'"))

        await wait_for(detaching, 30, "the maintenance detaching the old partition")
        # A sink's write meanwhile: a plain DETACH queued it until the DETACH gave up.
        await writer.execute(f"INSERT INTO {table} (camera_id, object_class, minute, site, objects, events) VALUES ('w', 'person', $1, 's', 1, 1)", now)
        assert await detaching(), "the write waited for the detach"
        report = await job
        assert (table, name) not in report.dropped and any(t == table and name in why and "busy" in why for t, why in report.deferred), report
        assert await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", ahead), "the partitions ahead were not made"
        await report_conn.execute("COMMIT")

        later = await maintain(engine, lambda t: 3, ahead_days=9, detach_wait_s=3.0)
        assert (table, name) in later.dropped and not later.deferred, later
        assert not await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", name)
        assert [r["objects"] for r in await stack.query(f"SELECT objects FROM {table} WHERE camera_id = 'w'")] == [1]
    finally:
        await engine.dispose()
        await writer.close()
        await report_conn.close()


async def test_a_row_past_the_retention_in_its_partitions_day_of_grace_is_left_out_with_a_word(stack: Stack, caplog) -> None:
    """Its partition is still there for a day of grace; written, the row would go with it at the next maintenance, unannounced."""
    from schemas.aggregates import Row
    from sinks.db import make_engine
    from sinks.keeper import PartitionKeeper

    settings = stack.settings.model_copy(update={"retention_days": {**stack.settings.retention_days, "minute": 3}})
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    graced = today - timedelta(days=4)  # ends 3 days ago: past the retention, dropped a day from now
    kept = today - timedelta(days=2)
    for day in (graced, kept):
        await stack.query(f"CREATE TABLE camera_minute_counts_p{day:%Y%m%d} PARTITION OF camera_minute_counts "
                          f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')")
    engine = make_engine(settings.database_url)
    try:
        keeper = PartitionKeeper(engine, settings)
        await keeper.maintain()  # the partition of 4 days ago stays: its day of grace
        assert await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", f"camera_minute_counts_p{graced:%Y%m%d}")

        def row(day: datetime) -> Row:
            return Row("camera_minute_counts", {"camera_id": "g", "object_class": "person", "minute": int((day + timedelta(hours=12)).timestamp() * 1000)})

        assert await keeper.admit([row(graced), row(kept)]) == [row(kept)]
        assert "past the 3 days the table keeps" in caplog.text
    finally:
        await engine.dispose()


async def test_two_processes_with_different_retentions_do_not_make_each_others_drops_again(stack: Stack, caplog) -> None:
    from sinks.db import make_engine
    from sinks.partitions import maintain

    table = "camera_minute_counts"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old = today - timedelta(days=5)
    name = f"{table}_p{old:%Y%m%d}"
    await stack.query(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{old.isoformat()}') TO ('{(old + timedelta(days=1)).isoformat()}')")
    engine = make_engine(stack.settings.database_url)
    try:
        short = await maintain(engine, lambda t: 3, ahead_days=7)
        assert (table, name) in short.dropped
        # A process keeping 30 days meets a row of that day: the day stays gone, and the difference is told.
        await maintain(engine, lambda t: 30, ahead_days=7, back_to={table: old + timedelta(hours=12)})
        assert not await stack.query("SELECT 1 FROM pg_class WHERE relname = $1", name)
        assert "this process keeps 30" in caplog.text
    finally:
        await engine.dispose()


async def test_maintenance_hands_its_connections_back_as_it_found_them(stack: Stack) -> None:
    """It runs under a lock timeout, in UTC, holding an advisory lock: none of that may stay on a pooled connection the sink writes with."""
    from sinks.db import make_engine
    from sinks.partitions import maintain

    engine = make_engine(stack.settings.database_url)
    try:
        await maintain(engine, lambda t: 3, ahead_days=7)
        async with engine.connect() as first, engine.connect() as second:  # the pool's two connections
            for conn in (first, second):
                assert (await conn.exec_driver_sql("SHOW lock_timeout")).scalar() == "0"
        assert not await stack.query(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    finally:
        await engine.dispose()
