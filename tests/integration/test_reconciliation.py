"""Reconciliation on the real services: each camera's ledger against what landed in SQL.

Cameras here are real outboxes and uplinks (the node's delivery path) fed
events with chosen times, so each minute's expected state is known: a clean
camera is all ``match``; a row deleted from SQL, events a full outbox
dropped, and an event the bridge dead-lettered each show as their state in
their minute; a node that sends no ledger stays ``pending``. The same run
checks versioned geometry (two versions of a line in one minute stay apart)
and a camera clock ahead of the cloud (``clock_skew``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.events import NewEvent
from edge.outbox import Outbox
from edge.uplink import Uplink
from runtime.waiting import wait_for
from schemas import geometry as geometry_version
from schemas.codec import MINUTE_MS, encode
from tests.support import Stack, event, publish

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
M1 = NOW - NOW % MINUTE_MS - 10 * MINUTE_MS  # two closed minutes, a while ago
M2 = M1 + MINUTE_MS

OLD_DOOR = geometry_version.normalized([("door", (0.1, 0.5), (0.9, 0.5))], [])
NEW_DOOR = geometry_version.normalized([("door", (0.1, 0.6), (0.9, 0.6))], [])
OLD, NEW = geometry_version.version(OLD_DOOR), geometry_version.version(NEW_DOOR)


def person(ts: int, track: int, **data: object) -> NewEvent:
    return NewEvent(ts, "track.start", {"track_id": track, "class": "person", "confidence": 0.9, **data})


def cross(ts: int, track: int, geometry: str, direction: str = "in") -> NewEvent:
    return NewEvent(ts, "line.cross", {"track_id": track, "class": "person", "line": "door", "direction": direction, "geometry": geometry})


def a_minute(start: int) -> list[NewEvent]:
    """A bit of everything the ledger counts."""
    return [
        person(start + 1000, 1), person(start + 2000, 2),
        NewEvent(start + 3000, "zone.enter", {"track_id": 1, "class": "person", "zone": "till"}),
        NewEvent(start + 4000, "occupancy", {"zone": "till", "counts": {"person": 1, "car": 0}}),
        NewEvent(start + 5000, "zone.exit", {"track_id": 1, "class": "person", "zone": "till", "dwell_s": 2.0}),
        NewEvent(start + 6000, "track.end", {"track_id": 1, "class": "person", "dwell_s": 5.0, "max_confidence": 0.9}),
        NewEvent(start + 7000, "health", {"uptime_s": 7.0, "fps": 10.0, "outbox_depth": 0}),
    ]


class Camera:
    """An outbox and its uplink, as a node has them."""

    def __init__(self, stack: Stack, tmp: Path, camera_id: str, max_events: int = 100_000) -> None:
        self.outbox = Outbox(tmp / f"{camera_id}.sqlite3", camera_id, "shop", max_events=max_events)
        user, password = stack.camera_login(camera_id)
        self.uplink = Uplink(stack.settings, self.outbox, username=user, password=password)
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def record(self, events: list[NewEvent]) -> None:
        self.outbox.append(events)
        self.uplink.notify()

    def start(self) -> None:
        self.task = asyncio.create_task(self.uplink.run(self.stop))

    async def deliver(self) -> None:
        """Report every minute and wait until the cloud confirmed all of it."""
        if self.task is None:
            self.start()
        while True:
            self.outbox.append([], close_at=int(time.time() * 1000), close_all=True)
            self.uplink.notify()
            assert await self.uplink.drained(60), f"{self.outbox.camera_id}: not confirmed"
            if not self.outbox.unreported():
                return

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        self.outbox.close()


async def states(stack: Stack, camera: str) -> dict[int, str]:
    rows = await stack.query(
        "SELECT (extract(epoch FROM minute) * 1000)::bigint AS m, state FROM camera_minute_reconciliation WHERE camera_id = $1", camera
    )
    return {r["m"]: r["state"] for r in rows}


async def settle(stack: Stack, camera: str, expected: dict[int, str], timeout: float = 90) -> None:
    async def reached() -> bool:
        return await states(stack, camera) == expected

    try:
        await wait_for(reached, timeout, f"{camera} reconciled as {expected}")
    except TimeoutError:
        raise AssertionError(f"{camera}: {await states(stack, camera)} != {expected}\n{stack.log_tail()}") from None


def audit(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.settings.env(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fleetsight", "audit", "--since", "1h", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_each_minute_shows_whether_sql_holds_what_the_camera_recorded(stack_factory, tmp_path: Path) -> None:
    stack: Stack = await stack_factory(reconcile_every_s=1.0, reconcile_grace_s=4.0)
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    cameras = {name: Camera(stack, tmp_path, name) for name in ("clean", "deleted", "deadletter", "skewed")}
    cameras["full"] = Camera(stack, tmp_path, "full", max_events=10)
    try:
        # clean: every kind of event, and a line moved mid-minute (two geometry versions).
        clean = cameras["clean"]
        clean.record([NewEvent(M1, "geometry", {"version": OLD, **OLD_DOOR}), *a_minute(M1), cross(M1 + 8000, 2, OLD)])
        clean.record([NewEvent(M1 + 20_000, "geometry", {"version": NEW, **NEW_DOOR}), cross(M1 + 21_000, 2, NEW, "out")])
        clean.record([*a_minute(M2), cross(M2 + 8000, 3, NEW)])
        cameras["deleted"].record(a_minute(M1) + a_minute(M2))
        # The bridge refuses an event the schema forbids (confidence 1.5): it is dead-lettered, and its minute is short.
        cameras["deadletter"].record([*a_minute(M1), person(M1 + 9000, 9, confidence=1.5), *a_minute(M2)])
        # full: 25 events for 10 places while the link is down; 15 are dropped, the ledger says so.
        cameras["full"].record([person(M1 + i * 1000, i) for i in range(25)])
        # skewed: its clock is 20 s ahead; the report of a health event made right now says so.
        cameras["skewed"].record([*a_minute(M1), NewEvent(int(time.time() * 1000) + 20_000, "health", {"uptime_s": 1.0, "outbox_age_s": 0.0})])
        await asyncio.gather(*(c.deliver() for c in cameras.values()))
        # An older node: events, never a ledger.
        await asyncio.to_thread(publish, stack.settings, [(stack.settings.mqtt_topics.events("old"), encode([event("old", 1, M1)]))])

        await settle(stack, "clean", {M1: "match", M2: "match"})
        await settle(stack, "deleted", {M1: "match", M2: "match"})
        await settle(stack, "deadletter", {M1: "mismatch", M2: "match"})
        await settle(stack, "full", {M1: "edge_dropped"})
        await settle(stack, "old", {M1: "pending"})

        [row] = await stack.query("SELECT differences FROM camera_minute_reconciliation WHERE camera_id = 'deadletter' AND state = 'mismatch'")
        assert '"events": {"edge": 8, "cloud": 7}' in row["differences"] and '"objects|person": {"edge": 3, "cloud": 2}' in row["differences"]
        [full] = await stack.query("SELECT edge_events, cloud_events, dropped FROM camera_minute_reconciliation WHERE camera_id = 'full'")
        assert (full["edge_events"], full["cloud_events"], full["dropped"]) == (25, 10, 15)

        # A row deleted from SQL: its minute turns to mismatch, and the camera gets an alert.
        await stack.query("DELETE FROM camera_minute_counts WHERE camera_id = 'deleted' AND minute = to_timestamp($1 / 1000.0)", M1)
        await settle(stack, "deleted", {M1: "mismatch", M2: "match"})

        async def alerted() -> set[str]:
            rows = await stack.query("SELECT camera_id FROM alerts WHERE kind = 'reconcile' AND state = 'open'")
            return {r["camera_id"] for r in rows} == {"deleted", "deadletter"}

        await wait_for(alerted, 30, "reconcile alerts for the mismatched cameras")
        [status] = await stack.query("SELECT last_matched_minute FROM camera_status WHERE camera_id = 'clean'")
        assert int(status["last_matched_minute"].timestamp() * 1000) == M2

        # Geometry: the moved line's crossings are kept apart, and the current version is the new one.
        lines = await stack.query(
            "SELECT geometry, crossings_in, crossings_out FROM line_minute_crossings WHERE camera_id = 'clean' AND minute = to_timestamp($1 / 1000.0) ORDER BY crossings_in",
            M1,
        )
        assert {(r["geometry"], r["crossings_in"], r["crossings_out"]) for r in lines} == {(OLD, 1, 0), (NEW, 0, 1)}
        [current] = await stack.query("SELECT geometry, definition FROM camera_geometry_current WHERE camera_id = 'clean'")
        assert current["geometry"] == NEW and '"b": [0.9, 0.6]' in current["definition"]

        # The clock: 20 s ahead, an alert, and its minutes flagged.
        async def skew_known() -> bool:
            rows = await stack.query("SELECT clock_offset_s FROM camera_status WHERE camera_id = 'skewed'")
            alerts = await stack.query("SELECT 1 FROM alerts WHERE camera_id = 'skewed' AND kind = 'clock_skew' AND state = 'open'")
            return bool(rows and rows[0]["clock_offset_s"] and 15 < rows[0]["clock_offset_s"] <= 20 and alerts)

        await wait_for(skew_known, 30, "the skewed camera's clock offset and alert")

        # fleetsight audit: the same verdicts, checked now; exit 1 on a mismatch.
        ok = await asyncio.to_thread(audit, stack, "--camera", "clean")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "clean" in ok.stdout and "mismatch" in ok.stdout  # the column header
        bad = await asyncio.to_thread(audit, stack)
        assert bad.returncode == 1 and "mismatch deleted" in bad.stdout and "mismatch deadletter" in bad.stdout, bad.stdout + bad.stderr
        # The hour still counts the deleted minute's objects: the rollup check names it (its day agrees with
        # its hours); every other camera's hours and days agree.
        assert "mismatch camera_hour_counts deleted" in bad.stdout, bad.stdout
        assert not re.search(r"mismatch \w+_(hour_\w+ (clean|skewed|deadletter)|day_\w+ )", bad.stdout), bad.stdout
        report = json.loads((await asyncio.to_thread(audit, stack, "--format", "json")).stdout)
        cams = {c["camera_id"]: c for c in report["cameras"]}
        assert 19 <= cams["skewed"]["clock_offset_s"] < 21 and cams["skewed"]["site"] == "shop"  # its clock offset
        assert cams["deleted"]["mismatch"] >= 1 and {m["camera_id"] for m in report["mismatches"]} >= {"deleted", "deadletter"}
        assert any(r["table"] == "camera_hour_counts" and r["camera_id"] == "deleted" for r in report["rollups"]["differ"])
        rows = list(csv.DictReader(io.StringIO((await asyncio.to_thread(audit, stack, "--format", "csv")).stdout)))
        assert {r["camera_id"]: int(r["mismatch"]) for r in rows} == {c: cams[c]["mismatch"] for c in cams}
    finally:
        for camera in cameras.values():
            await camera.close()
