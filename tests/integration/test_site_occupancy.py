"""People inside a site, from its entrances: the site tables on the real PostgreSQL, through the worker's code and the sink's writer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from schemas import geometry
from schemas.codec import MINUTE_MS, encode, validate
from schemas.sites import SiteRule
from sinks.keeper import PartitionKeeper
from sinks.writer import upsert
from streams.aggregate import Incoming, MinuteAggregator
from streams.status import AlertConfig, FleetStatus
from tests.support import Stack

pytestmark = pytest.mark.integration

SITE = "shop-1"


def door(name: str, entrance: str | None) -> tuple[dict[str, Any], str]:
    """A camera's geometry event body with one line, and its version."""
    doc = geometry.normalized([(name, (0.1, 0.5), (0.9, 0.5), entrance)], [])
    version = geometry.version(doc)
    return {"version": version, **doc}, version


@dataclass
class Cloud:
    """The worker's aggregation and status code, with their state kept between batches, writing through the sink's writer."""

    engine: AsyncEngine
    keeper: PartitionKeeper
    rules: dict[str, SiteRule]
    clock: list[int]
    buckets: dict[str, Any] = field(default_factory=dict)
    cameras: dict[str, Any] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def event(self, camera: str, ts: int, kind: str, data: dict[str, Any], site: str = SITE) -> dict[str, Any]:
        self.seqs[camera] = self.seqs.get(camera, 0) + 1
        return {"v": 1, "camera_id": camera, "site": site, "seq": self.seqs[camera], "ts": ts, "type": kind, "data": data}

    def crossings(self, camera: str, version: str, ts: int, direction: str, n: int, cls: str = "person", line: str = "door") -> list[dict[str, Any]]:
        return [
            self.event(camera, ts + i, "line.cross", {"track_id": i, "class": cls, "line": line, "direction": direction, "geometry": version})
            for i in range(n)
        ]

    async def send(self, events: list[dict[str, Any]], arrived: int | None = None) -> None:
        """``events`` as one record each, applied and written as the pipeline does."""
        self.clock[0] += 1000  # a status row's version is the time it was made at
        arrived = arrived or self.clock[0]
        records = [Incoming(0, arrived, encode([validate(e)])) for e in events]
        result = MinuteAggregator(7 * 24 * 3600_000).process(records, self.buckets)
        rows = list(result.rows.values()) + FleetStatus(AlertConfig(), lambda: self.clock[0]).observe(self.cameras, result.events, result.late)
        await upsert(self.engine, await self.keeper.admit(rows), self.rules)

    async def sweep(self) -> None:
        rows = FleetStatus(AlertConfig(offline_after_s=60), lambda: self.clock[0]).sweep(self.cameras, lambda _: True)
        await upsert(self.engine, rows, self.rules)


@pytest.fixture
async def cloud(stack: Stack) -> AsyncIterator[Cloud]:
    engine = create_async_engine(stack.settings.database_url)
    keeper = PartitionKeeper(engine, stack.settings)
    await keeper.maintain()  # as the sink does first: then it makes partitions back in time for older rows
    try:
        yield Cloud(engine, keeper, {}, [int(time.time() * 1000)])
    finally:
        await engine.dispose()


async def minutes(stack: Stack, site: str = SITE) -> dict[int, tuple[int, int, int, int, int, bool]]:
    """Per minute: people in, out, inside, peak, corrected, complete."""
    rows = await stack.query(
        "SELECT minute, people_in, people_out, inside, peak, corrected, complete FROM site_minute_occupancy WHERE site = $1 ORDER BY minute", site,
    )
    return {int(r["minute"].timestamp() * 1000): tuple(r.values())[1:] for r in rows}  # type: ignore[misc]


async def figures(stack: Stack) -> dict[int, tuple[int, ...]]:
    """Per minute: people in, out, inside, peak, corrected."""
    return {minute: row[:5] for minute, row in (await minutes(stack)).items()}


def minute_of(ms: int) -> int:
    return ms - ms % MINUTE_MS


async def test_a_sites_minutes_are_its_doors_crossings_and_a_late_door_corrects_every_later_minute(stack: Stack, cloud: Cloud) -> None:
    now = cloud.clock[0]
    t0 = minute_of(now) - 10 * MINUTE_MS
    front, v_front = door("front", "in")  # walking "in" over the line enters the shop
    back, v_back = door("back", "out")  # this line is drawn the other way: "out" enters
    aisle, v_aisle = door("aisle", None)  # a counting line inside: not a door
    await cloud.send([
        cloud.event("cam-front", t0, "geometry", front), cloud.event("cam-back", t0, "geometry", back),
        cloud.event("cam-aisle", t0, "geometry", aisle),
    ])
    await cloud.send(
        cloud.crossings("cam-front", v_front, t0 + 1000, "in", 5, line="front")
        + cloud.crossings("cam-front", v_front, t0 + 5000, "in", 2, cls="car", line="front")  # not people
        + cloud.crossings("cam-aisle", v_aisle, t0 + 1000, "in", 9, line="aisle")
        + cloud.crossings("cam-front", v_front, t0 + MINUTE_MS, "out", 2, line="front")
        + cloud.crossings("cam-front", v_front, t0 + 2 * MINUTE_MS, "in", 1, line="front")
    )
    assert await figures(stack) == {
        t0: (5, 0, 5, 5, 0), t0 + MINUTE_MS: (0, 2, 3, 5, 0), t0 + 2 * MINUTE_MS: (1, 0, 4, 4, 0),
    }
    # The back door's backlog lands late: 3 in during the first minute and 1 out in the second.
    late = cloud.crossings("cam-back", v_back, t0 + 2000, "out", 3, line="back") + cloud.crossings("cam-back", v_back, t0 + MINUTE_MS + 1, "in", 1, line="back")
    await cloud.send(late)
    expected = {
        t0: (8, 0, 8, 8, 0), t0 + MINUTE_MS: (0, 3, 5, 8, 0), t0 + 2 * MINUTE_MS: (1, 0, 6, 6, 0),
    }
    assert await figures(stack) == expected
    await cloud.send(late)  # the same events again: duplicates change nothing
    assert await figures(stack) == expected
    # More out than in: inside stays at zero and the exits it ignored are counted.
    await cloud.send(cloud.crossings("cam-front", v_front, t0 + 3 * MINUTE_MS, "out", 9, line="front"))
    assert (await figures(stack))[t0 + 3 * MINUTE_MS] == (0, 9, 0, 6, 3)
    hour = await stack.query("SELECT sum(people_in) AS i, sum(people_out) AS o, max(peak) AS p FROM site_hour_occupancy WHERE site = $1", SITE)
    assert (hour[0]["i"], hour[0]["o"], hour[0]["p"]) == (9, 12, 8)
    day = await stack.query("SELECT people_in, people_out, inside, peak, corrected FROM site_day_occupancy WHERE site = $1", SITE)
    assert [tuple(r.values()) for r in day] == [(9, 12, 0, 8, 3)]
    # Both doors report live: nothing is missing, and every minute says so.
    await cloud.send([cloud.event(cam, cloud.clock[0], "health", {"uptime_s": 1.0, "outbox_depth": 0}) for cam in ("cam-front", "cam-back")])
    assert all(row[5] for row in (await minutes(stack)).values())
    doors = await stack.query("SELECT camera_id, line, direction FROM site_entrances WHERE site = $1 ORDER BY camera_id", SITE)
    assert [tuple(r.values()) for r in doors] == [("cam-back", "back", "out"), ("cam-front", "front", "in")]


async def test_a_dark_door_leaves_its_sites_minutes_incomplete_until_its_backlog_lands(stack: Stack, cloud: Cloud) -> None:
    now = cloud.clock[0]
    t0 = minute_of(now) - 20 * MINUTE_MS
    front, v_front = door("front", "in")
    back, v_back = door("back", "in")
    await cloud.send([cloud.event("cam-front", t0, "geometry", front), cloud.event("cam-back", t0, "geometry", back)])
    await cloud.send(cloud.crossings("cam-back", v_back, t0 + 1000, "in", 1, line="back"))
    # The back door goes quiet after its first minute; the front door goes on.
    await cloud.send(cloud.crossings("cam-front", v_front, t0 + 1000, "in", 2, line="front"))
    cloud.clock[0] = now + 5 * MINUTE_MS
    await cloud.sweep()  # two minutes without a word: offline
    await cloud.send([e for k in range(1, 6) for e in cloud.crossings("cam-front", v_front, t0 + k * MINUTE_MS, "in", 1, line="front")])
    got = await minutes(stack)
    assert got[t0][5] is False, "the back door's last minute: it may have sent only part of it"
    assert all(not got[t0 + k * MINUTE_MS][5] for k in range(1, 6)), got
    assert got[t0 + 5 * MINUTE_MS][2] == 8
    # It comes back and sends its backlog (oldest first: it is catching up), then a live report.
    backlog = cloud.crossings("cam-back", v_back, t0 + 2 * MINUTE_MS, "in", 2, line="back")
    await cloud.send(backlog[:1])
    got = await minutes(stack)
    assert [got[t0 + k * MINUTE_MS][5] for k in range(0, 6)] == [True, True, False, False, False, False]
    await cloud.send(backlog[1:] + [
        cloud.event(cam, cloud.clock[0], "health", {"uptime_s": 1.0, "outbox_depth": 0}) for cam in ("cam-back", "cam-front")
    ])
    got = await minutes(stack)
    assert all(row[5] for row in got.values()), got
    assert got[t0 + 5 * MINUTE_MS][2] == 10
    hours = await stack.query("SELECT bool_and(complete) AS c FROM site_hour_occupancy WHERE site = $1", SITE)
    assert hours[0]["c"] is True


@pytest.mark.parametrize(("zone", "starts"), [("America/New_York", "03:00"), ("Asia/Kolkata", "00:00")])  # on a UTC hour, and half past one
async def test_the_count_starts_again_at_the_sites_own_midnight(stack: Stack, cloud: Cloud, zone: str, starts: str) -> None:
    rule = SiteRule(time_zone=zone, day_starts=starts)  # type: ignore[arg-type]
    cloud.rules[SITE] = rule
    now = cloud.clock[0]
    start, _ = rule.day_of(now)
    if now - start < 5 * MINUTE_MS:  # the day began just now: use the one before
        start, _ = rule.day_of(start - MINUTE_MS)
    front, v_front = door("front", "in")
    await cloud.send([cloud.event("cam-front", start - 3 * MINUTE_MS, "geometry", front)])
    await cloud.send(
        cloud.crossings("cam-front", v_front, start - 2 * MINUTE_MS, "in", 4, line="front")
        + cloud.crossings("cam-front", v_front, start - MINUTE_MS, "out", 1, line="front")
        + cloud.crossings("cam-front", v_front, start, "in", 2, line="front")
        + cloud.crossings("cam-front", v_front, start + MINUTE_MS, "out", 3, line="front")
    )
    got = await figures(stack)
    assert [got[start + k * MINUTE_MS][2] for k in (-2, -1, 0, 1)] == [4, 3, 2, 0]
    assert got[start + MINUTE_MS][4] == 1  # the third exit had no entry that day
    days = await stack.query("SELECT day, people_in, inside FROM site_day_occupancy WHERE site = $1 ORDER BY day", SITE)
    assert [(int(r["day"].timestamp() * 1000), r["people_in"], r["inside"]) for r in days] == [
        (rule.day_of(start - MINUTE_MS)[0], 4, 3), (start, 2, 0),
    ]
    local = datetime.fromtimestamp(start / 1000, tz=UTC).astimezone(rule.zone)
    assert f"{local:%H:%M}" == starts


async def test_a_fault_of_the_site_tables_holds_no_cameras_rows_back(stack: Stack, cloud: Cloud) -> None:
    now = cloud.clock[0]
    front, v_front = door("front", "in")
    await cloud.send([cloud.event("cam-front", now - 5000, "geometry", front)])
    # The site minutes lose every partition (as an operator's mistaken DROP would): their insert fails each time.
    for r in await stack.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'site_minute_occupancy'"
    ):
        await stack.query(f'DROP TABLE "{r["relname"]}"')
    await cloud.send(cloud.crossings("cam-front", v_front, now - 4000, "in", 3, line="front"))
    rows = await stack.query("SELECT sum(crossings_in) AS n FROM line_minute_crossings WHERE camera_id = 'cam-front'")
    assert rows[0]["n"] == 3, "the camera's rows are written whatever the site tables' trouble"
