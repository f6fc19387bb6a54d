"""The README's example queries, run on the real pipeline and checked against ground truth."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from runtime.settings import REPO_ROOT
from runtime.waiting import WaitTimeout, wait_for
from schemas.codec import MINUTE_MS
from tests.support import Stack, publish

pytestmark = pytest.mark.integration

SITES = {"cam-a": "shop-1", "cam-b": "shop-1", "cam-c": "depot-2"}
GEOMETRY_TAGGED = ("line.cross", "zone.enter", "zone.exit", "occupancy")
HOUR_MS = 3600_000


def readme_queries() -> dict[str, str]:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n-- query: ([\w-]+)\n(.*?)```", text, re.S)
    return {name: body.strip() for name, body in blocks}


def make_events(now: int, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """A deterministic day for three cameras, all of it after midnight UTC."""
    midnight = now - now % (24 * HOUR_MS)
    start = max(now - 40 * 60_000, midnight + 1000)
    span = now - 60_000 - start
    fleet: dict[str, list[dict[str, Any]]] = {}
    for camera, site in SITES.items():
        items: list[tuple[int, str, dict[str, Any]]] = []
        for track in range(1, rng.randint(15, 25) + 1):
            t0 = start + rng.randrange(max(span, 1))
            cls = rng.choice(["person", "person", "person", "car"])
            dwell = rng.randint(2, 40)
            items.append((t0, "track.start", {"track_id": track, "class": cls, "confidence": 0.8}))
            if rng.random() < 0.7:
                items.append((t0 + 500, "line.cross", {"track_id": track, "class": cls, "line": "door", "direction": rng.choice(["in", "out"])}))
            if rng.random() < 0.6:
                items.append((t0 + 600, "zone.enter", {"track_id": track, "class": cls, "zone": "till"}))
                if rng.random() < 0.8:
                    items.append((t0 + 600 + dwell * 500, "zone.exit", {"track_id": track, "class": cls, "zone": "till", "dwell_s": dwell / 2}))
            items.append((t0 + dwell * 1000, "track.end", {"track_id": track, "class": cls, "dwell_s": float(dwell), "max_confidence": 0.9}))
        minutes = list(range(start - start % MINUTE_MS + MINUTE_MS, now - MINUTE_MS, MINUTE_MS))
        for i, minute in enumerate(minutes):
            people = 5 if camera == "cam-a" and i >= len(minutes) - 3 else rng.randint(0, 3)
            items.append((minute + 10_000, "occupancy", {"zone": "till", "counts": {"car": 0, "person": people}}))
            depth = (100 * (i - len(minutes) + 5)) if camera == "cam-b" and i >= len(minutes) - 3 else 0
            items.append((minute + 20_000, "health", {"uptime_s": 60.0 * i, "fps": 10.0, "frames": 600, "frames_skipped": 50, "outbox_depth": depth, "model_version": "nanodet-g-416@1"}))
        items.sort(key=lambda x: x[0])
        if camera == "cam-b":  # its lines and zones were moved half-way: two geometry versions
            for i, (_, type_, data) in enumerate(items):
                if type_ in GEOMETRY_TAGGED:
                    data["geometry"] = "0" * 16 if i < len(items) // 2 else "f" * 16
        fleet[camera] = [
            {"v": 1, "camera_id": camera, "site": site, "seq": seq, "ts": ts, "type": type_, "data": data}
            for seq, (ts, type_, data) in enumerate(items, start=1)
        ]
    return fleet


def expected(fleet: dict[str, list[dict[str, Any]]], db_now: int) -> dict[str, list[tuple]]:
    events = [e for evs in fleet.values() for e in evs]
    minute = lambda e: e["ts"] - e["ts"] % MINUTE_MS  # noqa: E731
    midnight = db_now - db_now % (24 * HOUR_MS)
    # The queries count each camera's current lines and zones: the version seen last.
    current = {e["camera_id"]: e["data"].get("geometry", "") for e in sorted(events, key=lambda e: e["ts"]) if e["type"] in GEOMETRY_TAGGED}
    today = [
        e for e in events
        if minute(e) >= midnight and (e["type"] not in GEOMETRY_TAGGED or e["data"].get("geometry", "") == current[e["camera_id"]])
    ]
    starts = [e for e in events if e["type"] == "track.start"]

    people = Counter(e["camera_id"] for e in starts if e["data"]["class"] == "person" and minute(e) >= db_now - HOUR_MS)
    hours: Counter = Counter()
    for e in starts:
        hours[(e["site"], e["ts"] - e["ts"] % HOUR_MS)] += 1
    busiest = {}
    for (site, hour), n in sorted(hours.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        busiest.setdefault(site, (site, hour, n))
    inside: Counter = Counter()
    crossings: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    dwell: dict[tuple, list[float]] = defaultdict(list)
    for e in today:
        d = e["data"]
        if e["type"] in ("zone.enter", "zone.exit") and d["class"] == "person":
            inside[(e["camera_id"], d["zone"])] += 1 if e["type"] == "zone.enter" else -1
        if e["type"] == "line.cross":
            crossings[(e["camera_id"], d["line"])][0 if d["direction"] == "in" else 1] += 1
        if e["type"] == "zone.exit":
            dwell[(e["camera_id"], d["zone"])].append(d["dwell_s"])
    objects_today = Counter(e["site"] for e in starts if minute(e) >= midnight)
    people_days = Counter((e["site"], e["ts"] - e["ts"] % (24 * HOUR_MS)) for e in starts if e["data"]["class"] == "person")
    return {
        "people-per-camera-last-hour": sorted(people.items(), key=lambda kv: (-kv[1], kv[0])),
        "busiest-hour-per-site-last-week": [busiest[s] for s in sorted(busiest)],
        "people-per-site-per-day-this-quarter": [(site, day, n) for (site, day), n in sorted(people_days.items())],
        "net-people-inside-zone-today": [(c, z, n) for (c, z), n in sorted(inside.items())],
        "crossings-in-and-out-today": [(c, line, i, o) for (c, line), (i, o) in sorted(crossings.items())],
        "mean-dwell-per-zone-today": [(c, z, sum(v) / len(v)) for (c, z), v in sorted(dwell.items())],
        "cameras-offline-more-than-5-minutes-today": [("cam-c", "depot-2")],
        "open-alerts": [("cam-a", "occupancy", "till"), ("cam-b", "backlog", ""), ("cam-c", "offline", "")],
        "fleet-overview": [("depot-2", 1, 0, 1, objects_today["depot-2"], 1), ("shop-1", 2, 2, 0, objects_today["shop-1"], 2)],
        "late-events-per-camera": [("cam-a", 1, 25)],
        "minutes-that-do-not-reconcile-today": [],  # these cameras send no ledger: pending, never mismatch
    }


def shape(name: str, rows: list) -> list[tuple]:
    """The columns of each query that the test checks, as plain values."""
    if name == "busiest-hour-per-site-last-week":
        return [(r["site"], int(r["hour"].timestamp() * 1000), r["objects"]) for r in rows]
    if name == "people-per-site-per-day-this-quarter":
        return [(r["site"], int(r["day"].timestamp() * 1000), r["people"]) for r in rows]
    if name == "mean-dwell-per-zone-today":
        return [(r["camera_id"], r["zone"], float(r["mean_dwell_s"])) for r in rows]
    if name == "cameras-offline-more-than-5-minutes-today":
        return [(r["camera_id"], r["site"]) for r in rows]
    if name == "open-alerts":
        return [(r["camera_id"], r["kind"], r["subject"]) for r in rows]
    if name == "late-events-per-camera":
        return [(r["camera_id"], r["late"], round(r["oldest_s"] / 3600)) for r in rows]
    return [tuple(r.values()) for r in rows]


def matches(name: str, got: list[tuple], want: list[tuple]) -> bool:
    if name == "mean-dwell-per-zone-today":  # rounded to 0.1 s by the query
        return len(got) == len(want) and all(g[:2] == w[:2] and abs(g[2] - w[2]) <= 0.051 for g, w in zip(got, want))
    return got == want


async def test_readme_queries_return_the_ground_truth(stack_factory) -> None:
    stack: Stack = await stack_factory(
        offline_after_s=8, status_sweep_s=1, alert_clear_s=60,
        occupancy_alerts=[{"zone": "till", "max": 3, "for_s": 60}],
    )
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    # The site queries need doors: tests/integration/test_site_pipeline.py runs them.
    queries = {name: sql for name, sql in readme_queries().items() if not name.startswith("site-")}
    assert len(queries) >= 5

    topics = stack.settings.mqtt_topics
    now = int(time.time() * 1000)
    fleet = make_events(now, random.Random(11))
    rng = random.Random(5)
    items = []
    for camera, events in fleet.items():
        for i in range(0, len(events), 20):
            items.append((topics.events(camera), json.dumps(events[i : i + 20]).encode()))
        items.append((topics.events(camera), json.dumps(rng.sample(events, len(events) // 10)).encode()))  # resends
    late = {**fleet["cam-a"][0], "seq": len(fleet["cam-a"]) + 1, "ts": now - 25 * HOUR_MS}
    items.append((topics.events("cam-a"), json.dumps(late).encode()))
    publish(stack.settings, items)

    # cam-a and cam-b stay in touch; cam-c has gone quiet and will be reported offline.
    stop = threading.Event()

    def heartbeats() -> None:
        seq = {c: len(fleet[c]) + 10 for c in ("cam-a", "cam-b")}
        while not stop.is_set():
            beats = []
            for camera, depth in (("cam-a", 0), ("cam-b", 300)):
                seq[camera] += 1
                beat = {"v": 1, "camera_id": camera, "site": SITES[camera], "seq": seq[camera], "ts": int(time.time() * 1000),
                        "type": "health", "data": {"uptime_s": 1.0, "outbox_depth": depth}}
                beats.append((topics.events(camera), json.dumps(beat).encode()))
            publish(stack.settings, beats)
            stop.wait(2.0)

    beat_thread = threading.Thread(target=heartbeats, daemon=True)
    beat_thread.start()
    try:
        last: dict[str, tuple] = {}

        async def all_match() -> bool:
            stack.assert_running()
            db_now = (await stack.query("SELECT now() AS now"))[0]["now"]
            want = expected(fleet, int(db_now.timestamp() * 1000))
            ok = True
            for name, sql in queries.items():
                if name == "cameras-offline-more-than-5-minutes-today":
                    # The test cannot wait five minutes: same query, shorter silence.
                    sql = sql.replace("interval '5 minutes'", "interval '1 second'")
                got = shape(name, await stack.query(sql))
                last[name] = (got, want[name])
                ok &= matches(name, got, want[name])
            return ok

        try:
            await wait_for(all_match, 180, "the README queries to return the ground truth", interval=1.0)
        except WaitTimeout:
            wrong = {n: v for n, v in last.items() if not matches(n, *v)}
            raise AssertionError(f"queries that differ (got, want): {wrong}\n{stack.log_tail()}") from None
    finally:
        stop.set()
        await asyncio.to_thread(beat_thread.join, 10)
