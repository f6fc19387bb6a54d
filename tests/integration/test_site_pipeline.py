"""A site's occupancy end to end: two doors on different partitions, one dark for a while, the worker killed
mid-stream; the real Mosquitto, bridge, Kafka, worker, sink, PostgreSQL, notifier and an HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.events import NewEvent
from edge.outbox import Outbox
from edge.uplink import Uplink
from runtime.waiting import wait_for
from schemas import geometry
from schemas.codec import MINUTE_MS
from schemas.sites import SiteRule
from streams.partitioning import partition_for
from tests.integration.test_notifier import Receiver, reading, until
from tests.integration.test_queries import readme_queries
from tests.integration.test_reconciliation import audit
from tests.support import Stack

pytestmark = pytest.mark.integration

SITE = "shop-9"
RULE = {"time_zone": "Europe/Berlin", "day_starts": "04:00", "capacity": 4, "capacity_for_s": 0}


def doors(partitions: int) -> tuple[str, str]:
    """Two camera ids whose events land on different partitions."""
    front = "door-front"
    back = next(f"door-back-{i}" for i in range(100) if partition_for(f"door-back-{i}", partitions) != partition_for(front, partitions))
    return front, back


class Door:
    """A door camera's outbox and uplink, as the edge has them; its uplink can be stopped (the camera goes dark) and started again."""

    def __init__(self, stack: Stack, tmp: Path, camera: str, line: str) -> None:
        self.stack, self.camera, self.line = stack, camera, line
        self.outbox = Outbox(tmp / f"{camera}.sqlite3", camera, SITE)
        user, password = stack.camera_login(camera)
        self.uplink = Uplink(stack.settings, self.outbox, batch_max=20, resend_after_s=3, username=user, password=password)
        doc = geometry.normalized([(line, (0.1, 0.5), (0.9, 0.5), "in")], [])
        self.version = geometry.version(doc)
        self.crossed: list[tuple[int, str]] = []  # (event time, in or out) of the site
        self.track = 0
        self.stop: asyncio.Event | None = None
        self.task: asyncio.Task[Any] | None = None
        self.outbox.append([NewEvent(now(), "geometry", {"version": self.version, **doc})])

    def up(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.uplink.run(self.stop))

    async def down(self) -> None:
        assert self.stop is not None and self.task is not None
        self.stop.set()
        await self.task

    def cross(self, direction: str, n: int = 1) -> None:
        batch = []
        for _ in range(n):
            self.track += 1
            ts = now()
            batch.append(NewEvent(ts, "line.cross", {"track_id": self.track, "class": "person", "line": self.line, "direction": direction, "geometry": self.version}))
            self.crossed.append((ts, direction))
        self.outbox.append(batch)
        self.uplink.notify()

    def report(self) -> None:
        self.outbox.append([NewEvent(now(), "health", {"uptime_s": 1.0, "outbox_depth": 0})])
        self.uplink.notify()


def now() -> int:
    return int(time.time() * 1000)


def expected(crossings: list[tuple[int, str]], rule: SiteRule) -> dict[int, tuple[int, int, int]]:
    """Per minute with a crossing: people in, out and inside at its end, counted from the events themselves."""
    flows: dict[int, Counter[str]] = {}
    for ts, direction in crossings:
        flows.setdefault(ts - ts % MINUTE_MS, Counter())[direction] += 1
    out, inside, day = {}, 0, None
    for minute in sorted(flows):
        if rule.day_of(minute) != day:
            day, inside = rule.day_of(minute), 0
        inside = max(0, inside + flows[minute]["in"] - flows[minute]["out"])
        out[minute] = (flows[minute]["in"], flows[minute]["out"], inside)
    return out


async def test_a_sites_occupancy_is_exact_after_a_dark_door_and_a_killed_worker_and_its_capacity_alert_reaches_the_webhook(
    stack_factory: Any, tmp_path: Path,
) -> None:
    (tmp_path / "ops").write_bytes(b"ops-secret")
    receiver = Receiver({"ops": b"ops-secret"})
    stack: Stack = await stack_factory(
        sites={SITE: RULE}, capacity_check_s=1, offline_after_s=5, status_sweep_s=1,
        webhooks=[{"name": "ops", "url": receiver.url("ops"), "secret_file": str(tmp_path / "ops"), "kinds": ["capacity"]}],
        notifier_sweep_s=1, notifier_sweep_after_s=1,
    )
    rule = SiteRule.model_validate(RULE)
    front_id, back_id = doors(stack.settings.kafka_partitions)
    await receiver.start()
    for component in ("bridge", "worker", "sink", "notifier"):
        stack.start(component)
    await stack.wait_bridge_online()
    await reading(stack)
    front, back = Door(stack, tmp_path, front_id, "front"), Door(stack, tmp_path, back_id, "back")

    async def site() -> dict[int, tuple[int, int, int, bool]]:
        stack.assert_running()
        rows = await stack.query("SELECT minute, people_in, people_out, inside, complete FROM site_minute_occupancy WHERE site = $1", SITE)
        return {int(r["minute"].timestamp() * 1000): (r["people_in"], r["people_out"], r["inside"], r["complete"]) for r in rows}

    async def status(camera: str) -> dict[str, Any]:
        rows = await stack.query("SELECT online FROM camera_status WHERE camera_id = $1", camera)
        return dict(rows[0]) if rows else {}

    def capacity_states() -> list[str]:
        return [r["body"]["state"] for r in receiver.got["ops"]]

    try:
        front.up()
        back.up()
        back.cross("in", 2)
        front.cross("in", 1)
        await until(stack, lambda: _inside(site, 3), 60, "the first three people inside")
        # The back door goes dark; people keep using both doors.
        await back.down()
        await until(stack, lambda: _offline(status, back_id), 60, "the back door offline")
        back.cross("in", 2)
        back.cross("out", 1)
        front.cross("in", 1)
        await until(stack, lambda: _inside(site, 4), 60, "the front door's person inside")
        got = await site()
        latest = max(got)
        assert got[latest][3] is False, f"a door is dark: the site's minutes cannot be complete {got}"
        [now_row] = await stack.query("SELECT inside, complete, dark_doors FROM site_occupancy_now WHERE site = $1", SITE)
        assert tuple(now_row.values()) == (4, False, back_id)
        # The worker dies mid-stream and comes back.
        stack.kill("worker", signal.SIGKILL)
        front.cross("in", 2)
        stack.start("worker")
        # The back door comes back: its backlog first, then a live report.
        back.up()
        back.report()
        front.report()
        want = expected(front.crossed + back.crossed, rule)

        async def exact_and_complete() -> bool:
            got = await site()
            return {m: v[:3] for m, v in got.items()} == want and all(v[3] for v in got.values())

        try:
            await wait_for(exact_and_complete, 120, "the site's minutes exact and complete", interval=0.5)
        except Exception:
            raise AssertionError(f"SQL {await site()}\nexpected {want}\n{stack.log_tail(40)}") from None
        assert want[max(want)][2] == 7
        [now_row] = await stack.query("SELECT inside, visits_today, capacity, complete, dark_doors FROM site_occupancy_now WHERE site = $1", SITE)
        assert tuple(now_row.values()) == (7, 8, 4, True, None)
        await readme_queries_answer(stack, want, rule)
        # Seven inside, the site holds four: the alert reaches the webhook; four leave and it closes.
        await until(stack, lambda: capacity_states() == ["open"], 60, "the capacity alert at the webhook")
        opened = receiver.got["ops"][0]["body"]
        assert (opened["kind"], opened["site"], opened["camera_id"]) == ("capacity", SITE, "")
        assert "7 people inside shop-9, over its capacity of 4" in opened["detail"]
        front.cross("out", 4)
        await until(stack, lambda: capacity_states() == ["open", "closed"], 60, "the capacity alert's closing")
        assert receiver.bad_signatures == 0
        # fleetsight audit: the site's minutes are its doors' crossings; a changed figure is named.
        report = json.loads((await asyncio.to_thread(audit, stack, "--format", "json")).stdout)
        assert report["sites"]["checked"] >= len(want) and report["sites"]["differ"] == []
        await stack.query("UPDATE site_minute_occupancy SET inside = inside + 1 WHERE site = $1 AND minute = (SELECT max(minute) FROM site_minute_occupancy)", SITE)
        bad = await asyncio.to_thread(audit, stack)
        assert bad.returncode == 1 and f"mismatch site {SITE}" in bad.stdout, bad.stdout + bad.stderr
    finally:
        for door in (front, back):
            if door.stop is not None:
                door.stop.set()
            if door.task is not None:
                await asyncio.gather(door.task, return_exceptions=True)
        await receiver.stop()


async def _inside(site: Any, n: int) -> bool:
    got = await site()
    return bool(got) and got[max(got)][2] == n


async def _offline(status: Any, camera: str) -> bool:
    return (await status(camera)).get("online") is False


async def readme_queries_answer(stack: Stack, want: dict[int, tuple[int, int, int]], rule: SiteRule) -> None:
    """The README's site queries give what the doors' events say."""
    queries = {name: sql for name, sql in readme_queries().items() if name.startswith("site-")}
    assert set(queries) == {"site-people-inside-now", "site-visits-per-day", "site-peak-this-week"}
    days: dict[int, list[int]] = {}
    peaks: dict[int, int] = {}
    before = 0
    for minute in sorted(want):
        day = days.setdefault(rule.day_of(minute)[0], [0, 0, 0])  # visits, peak, inside at the end
        if day == [0, 0, 0]:
            before = 0
        people_in, _, inside = want[minute]
        peak = max(before, inside)
        day[0] += people_in
        day[1] = max(day[1], peak)
        day[2] = inside
        hour = minute - minute % 3_600_000
        peaks[hour] = max(peaks.get(hour, 0), peak)
        before = inside
    today = max(days)
    now_rows = await stack.query(queries["site-people-inside-now"])
    assert [tuple(r.values()) for r in now_rows] == [(SITE, days[today][2], 4, True, None, days[today][0], days[today][1])]
    visits = await stack.query(queries["site-visits-per-day"])
    assert [(int(r["day"].timestamp() * 1000), r["visits"], r["peak"], r["left_inside_at_reset"], r["corrected"], r["complete"]) for r in visits] == [
        (day, v[0], v[1], v[2], 0, True) for day, v in sorted(days.items())
    ]
    top = max(peaks.values())
    [peak_row] = await stack.query(queries["site-peak-this-week"])
    assert (peak_row["site"], peak_row["peak"], int(peak_row["in_the_hour_from"].timestamp() * 1000)) == (
        SITE, top, min(h for h, p in peaks.items() if p == top),
    )
