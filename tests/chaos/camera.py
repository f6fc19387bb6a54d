"""A simulated high-rate camera for chaos runs: a real outbox and uplink in a
process of its own, so the harness can SIGKILL it.

    python -m tests.chaos.camera CAMERA_ID OUTBOX_PATH RATE SEED
SIGUSR1: stop making events (keep sending); SIGTERM: exit.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time

from edge.events import NewEvent
from edge.outbox import Outbox
from edge.uplink import Uplink
from fleetsight.mqtt_users import camera_login
from runtime.settings import load_settings
from schemas import geometry
from schemas.topics import MqttTopics

CLASSES = ("person", "person", "car", "bicycle")
# The gate is the chaos site's entrance: every camera is a door of one site, each on its own partition.
GATE = geometry.normalized([("gate", (0.1, 0.5), (0.9, 0.5), "in")], [])
VERSION = geometry.version(GATE)


LEGACY_ENV = "FLEETSIGHT_CHAOS_LEGACY_TOPICS"


class LegacyTopics(MqttTopics):
    """The uplink topics of an edge from before bridge shards (a camera not yet upgraded)."""

    def events(self, camera_id: str) -> str:
        return self.legacy_events(camera_id)

    def outbox(self, camera_id: str) -> str:
        return self.legacy_outbox(camera_id)

    def ack(self, camera_id: str) -> str:
        return self.legacy_ack(camera_id)


def events_for(rng: random.Random, track: int, ts: int) -> list[NewEvent]:
    """A plausible mix: tracks with crossings, zone visits, occupancy and health."""
    cls = rng.choice(CLASSES)
    out = [NewEvent(ts, "track.start", {"track_id": track, "class": cls, "confidence": 0.8})]
    if rng.random() < 0.6:
        out.append(NewEvent(ts, "line.cross", {
            "track_id": track, "class": cls, "line": "gate", "direction": rng.choice(["in", "out"]), "geometry": VERSION,
        }))
    if rng.random() < 0.5:
        out.append(NewEvent(ts, "zone.enter", {"track_id": track, "class": cls, "zone": "bay"}))
        out.append(NewEvent(ts, "zone.exit", {"track_id": track, "class": cls, "zone": "bay", "dwell_s": float(rng.randint(1, 30))}))
    out.append(NewEvent(ts, "track.end", {"track_id": track, "class": cls, "dwell_s": float(rng.randint(1, 60)), "max_confidence": 0.9}))
    if rng.random() < 0.1:
        out.append(NewEvent(ts, "occupancy", {"zone": "bay", "counts": {c: rng.randint(0, 4) for c in ("bicycle", "car", "person")}}))
    if rng.random() < 0.05:
        out.append(NewEvent(ts, "health", {"uptime_s": 1.0, "frames": 100, "frames_skipped": 10, "outbox_depth": 0}))
    return out


async def main(camera_id: str, path: str, rate: float, seed: int) -> None:
    settings = load_settings()
    outbox = Outbox(path, camera_id, "chaos", keep_confirmed=True)
    uplink = Uplink(settings, outbox, batch_max=50, resend_after_s=5, username=camera_id, password=camera_login(settings, camera_id))
    if os.environ.get(LEGACY_ENV):
        uplink.topics = LegacyTopics(settings.mqtt_topic_root)
    stop, generate = asyncio.Event(), asyncio.Event()
    generate.set()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, generate.clear)
    runner = asyncio.create_task(uplink.run(stop))
    rng = random.Random(seed + outbox.last_seq())  # a restart goes on with other tracks
    track = outbox.last_seq()
    outbox.append([NewEvent(int(time.time() * 1000), "geometry", {"version": VERSION, **GATE})])  # as a node does at start
    owed = 0.0
    while not stop.is_set():
        if generate.is_set():
            owed += rate * 0.1
            batch: list[NewEvent] = []
            while owed >= 1:
                track += 1
                new = events_for(rng, track, int(time.time() * 1000))
                owed -= len(new)
                batch += new
            if batch:
                outbox.append(batch)
                uplink.notify()
        await asyncio.sleep(0.1)  # the camera's own pace
    await runner
    outbox.close()


if __name__ == "__main__":
    import faulthandler
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR2)  # the harness asks for every thread's stack when a camera is stuck
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
