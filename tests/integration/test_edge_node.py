"""A real camera node on real video, through a broker outage, to exact SQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from edge.config import CameraConfig, LineConfig, OutboxConfig, SourceConfig, ZoneConfig
from edge.node import CameraNode
from runtime.waiting import WaitTimeout, wait_for
from schemas.codec import Event
from sinks.db import make_engine
from sinks.reconcile import check, judge
from tests.support import PrivateBroker, Stack, truth

pytestmark = pytest.mark.integration


async def test_broker_outage_mid_run_every_event_arrives_once_in_its_minute(
    stack: Stack, media: Path, tmp_path: Path
) -> None:
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    try:
        stack.settings = stack.settings.model_copy(update={"mqtt_url": broker.url})
        for component in ("bridge", "worker", "sink"):
            stack.start(component)
        await stack.wait_bridge_online()

        config = CameraConfig(
            camera_id="cam-plaza",
            site="plaza",
            source=SourceConfig(uri=str(media / "vtest.avi"), realtime=False),
            lines=[LineConfig(name="crosswalk", points=((0.05, 0.55), (0.95, 0.55)))],
            zones=[ZoneConfig(name="left", polygon=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)])],
            occupancy_interval_s=5,
            health_interval_s=5,
            outbox=OutboxConfig(path=tmp_path / "outbox.sqlite3"),
        )
        created: list[Event] = []
        node = CameraNode(config, stack.settings, max_frames=360, on_events=created.extend)
        run = asyncio.create_task(node.run(asyncio.Event(), drain_timeout_s=120))

        await wait_for(lambda: node.uplink.stats.watermark > 0, 120, "the first confirmed events")
        broker.kill()
        confirmed_before = node.uplink.stats.watermark
        await wait_for(lambda: node.stats.frames >= 200 or run.done(), 120, "frames during the outage")
        # While the broker is away, events pile up in the outbox and none is confirmed.
        assert not node.uplink.stats.connected
        assert node.uplink.stats.watermark == confirmed_before
        assert node._uplink_outbox.depth() > 0
        broker.start()

        assert await asyncio.wait_for(run, 300), "the outbox did not drain after the broker came back"
        starts = [e for e in created if e.type == "track.start"]
        assert len(starts) >= 10 and any(e.type == "line.cross" for e in created)
        expected = truth(starts)

        got: dict = {}

        async def exact():
            stack.assert_running()
            got.clear()
            got.update({k: v for k, v in (await stack.minute_counts()).items() if k[0] == "cam-plaza"})
            return got == dict(expected)

        try:
            await wait_for(exact, 120, f"SQL equal to the {len(starts)} tracks the node started")
        except WaitTimeout:
            raise AssertionError(f"got {got}, expected {dict(expected)}\n{stack.log_tail()}") from None
        seqs = [e.seq for e in created]
        assert seqs == list(range(1, len(seqs) + 1))

        # The node said what its lines are, reported every minute, and measured its clock by the acks.
        assert created[0].type == "geometry" and created[0].data["version"] == node.scene.geometry
        assert {e.data["minute"] for e in created if e.type == "reconcile"} == {e.minute for e in created if e.type != "reconcile"}
        offsets = [e.data["clock_offset_s"] for e in created if e.type == "health" and "clock_offset_s" in e.data]
        assert offsets and all(abs(o) < 1.0 for o in offsets), offsets  # one machine, one clock
        verdicts: list = []

        async def reconciled() -> bool:
            engine = make_engine(stack.settings.database_url)
            try:
                async with engine.connect() as conn:
                    verdicts[:] = [judge(c, int(time.time() * 1000), 60_000) for c in await check(conn, 0, "cam-plaza")]
            finally:
                await engine.dispose()
            return bool(verdicts) and all(v.state == "match" for v in verdicts)

        try:
            await wait_for(reconciled, 60, "every minute of the node to reconcile", interval=1.0)
        except WaitTimeout:
            raise AssertionError(f"{verdicts}\n{stack.log_tail()}") from None

        # The crowding signal: what the node's health reports said, summed per minute in SQL.
        reports = [e.data for e in created if e.type == "health"]
        said = (sum(d["people_seen"] for d in reports), sum(d["people_overlapping"] for d in reports))
        assert said[0] > 100 and 0 <= said[1] < said[0]  # people on the square, mostly apart
        stored: list = []

        async def crowding_in_sql() -> bool:
            engine = make_engine(stack.settings.database_url)
            try:
                async with engine.connect() as conn:
                    stored[:] = (await conn.execute(text(
                        "SELECT sum(people_seen), sum(people_overlapping), max(crowding) FROM camera_minute_health WHERE camera_id = :c"
                    ), {"c": "cam-plaza"})).one()
            finally:
                await engine.dispose()
            return tuple(stored[:2]) == said

        await wait_for(crowding_in_sql, 60, "the people seen and overlapping in camera_minute_health", interval=1.0)
        assert 0 <= stored[2] < 0.2  # the square is no crowd (edge/crowding.py)
    finally:
        broker.kill()
