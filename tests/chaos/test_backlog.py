"""A backlog drained through one bridge on a loaded box, with Kafka killed for a minute in the middle.

Issue 35: on a busy box one Kafka outage became a livelock. The bridge
exited on a full producer buffer, was restarted into the same backlog and
exited again; the cameras resent their whole tails every 10 s; nothing was
confirmed for 19 minutes. Here 20 cameras start with minutes of events in
their outboxes, two CPU hogs of the test's own keep both cores busy, and
Kafka is SIGKILLed for 60 s once a quarter of the backlog is confirmed.
The watermarks must keep moving whenever Kafka is up, no pipeline process
may exit, and SQL must end exact.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devtools.services import Kafka
from edge.outbox import Outbox
from fleetsight.mqtt_users import admin_settings
from runtime.mqtt import make_client
from runtime.waiting import wait_for
from schemas.codec import decode_ack
from tests.chaos.camera import events_for
from tests.chaos.harness import Chaos, longest_gap

# Two and a half minutes (a minute of it Kafka down): part of `make soak`, not of `make test`.
pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(not os.environ.get("FLEETSIGHT_SOAK"), reason="a soak run (make soak, or FLEETSIGHT_SOAK=1)"),
]

CAMERAS = 20
BACKLOG_S = 240  # minutes of events each camera holds when the run starts
BACKLOG_RATE = 20  # events a second in that backlog, per camera
KAFKA_DOWN_S = 60
# Longest the watermarks may stand still while Kafka is up and a backlog is
# left (Kafka's first minute back included: producers reconnect, groups rejoin).
STILL_LIMIT_S = 30


class Watermarks:
    """Every camera's ack watermark as the bridge publishes it, and each time one moved."""

    def __init__(self, chaos: Chaos) -> None:
        self.seqs: dict[str, int] = {}
        self.moves: list[float] = []
        self._lock = threading.Lock()
        settings = admin_settings(chaos.settings)
        self.client = make_client(settings, "backlog-watch", persistent=False)
        topics = chaos.settings.mqtt_topics
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.all_acks(), qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async(settings.mqtt.host, settings.mqtt.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        ack = decode_ack(bytes(msg.payload))
        with self._lock:
            if ack.seq > self.seqs.get(ack.camera_id, 0):
                self.seqs[ack.camera_id] = ack.seq
                self.moves.append(time.monotonic())

    def confirmed(self) -> int:
        with self._lock:
            return sum(self.seqs.values())

    def first_move_after(self, t: float) -> float | None:
        with self._lock:
            return next((m for m in self.moves if m > t), None)

    def longest_still(self, start: float, end: float) -> float:
        """The longest time between ``start`` and ``end`` in which no watermark moved."""
        with self._lock:
            moves = list(self.moves)
        return longest_gap(moves, start, end)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def prefill(chaos: Chaos, now_ms: int) -> int:
    """Put BACKLOG_S of events into every camera's outbox, as if its link had been down that long; returns how many each holds."""
    held = 0
    for n, camera in enumerate(chaos.sim_cameras):
        rng = random.Random(n)
        outbox = Outbox(chaos.root / f"{camera}.sqlite3", camera, "chaos", keep_confirmed=True)
        batch, track = [], 0
        start = now_ms - BACKLOG_S * 1000
        while len(batch) < BACKLOG_S * BACKLOG_RATE:
            track += 1
            batch += events_for(rng, track, start + len(batch) * 1000 // BACKLOG_RATE)
        outbox.append(batch)
        held = outbox.last_seq()
        outbox.close()
    return held


def cpu_hogs(seconds: float) -> list[subprocess.Popen]:
    """One busy process per core, ending by itself after ``seconds``."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 2)]


async def test_a_backlog_drains_on_a_loaded_box_through_a_kafka_outage(chaos_root: Path) -> None:
    chaos = Chaos(chaos_root, seed=35, sim_cameras=CAMERAS, rate=2.0, video=False)
    held = prefill(chaos, int(time.time() * 1000))
    backlog = held * CAMERAS
    hogs = cpu_hogs(900)
    watch: Watermarks | None = None
    supervisor: asyncio.Task[None] | None = None
    try:
        await chaos.setup(edges=False)
        supervisor = asyncio.create_task(chaos.supervise())
        watch = Watermarks(chaos)
        chaos.start_edges()
        started = time.monotonic()
        # Kafka goes down early in the drain: the bridge packs a chunk of waiting messages
        # at once (streams.packing), and at a quarter the watermarks had once jumped past half.
        await wait_for(lambda: watch.confirmed() >= backlog // 10, 300, "a tenth of the backlog confirmed", interval=0.1)
        kafka = Kafka(chaos.settings)
        pid = kafka.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed_at, at_kill = time.monotonic(), watch.confirmed()
        # The outage lasts its minute (a scenario's length, not a wait for something to happen).
        await wait_for(lambda: time.monotonic() - killed_at >= KAFKA_DOWN_S, KAFKA_DOWN_S + 5, "Kafka's minute down", interval=1)
        await chaos._restart_service(kafka)
        back_at = time.monotonic()
        await wait_for(lambda: watch.first_move_after(back_at) is not None, STILL_LIMIT_S * 4, "the watermarks to move after Kafka came back")
        await wait_for(lambda: all(watch.seqs.get(c, 0) >= held for c in chaos.sim_cameras), 600, "the whole backlog confirmed", interval=1)
        done_at = time.monotonic()
        restarts = dict(chaos.report.crash_restarts)
        await chaos.drain()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if watch is not None:
            watch.close()
        if supervisor is not None:
            supervisor.cancel()
        await chaos.teardown()
    moved_after_s = watch.first_move_after(back_at) - back_at
    # Kafka up: before the kill, and from its return (its first minute back included).
    still_s = max(watch.longest_still(started, killed_at), watch.longest_still(back_at, done_at))
    report = chaos.report
    print(report.render())
    print(f"backlog {backlog} events from {CAMERAS} cameras confirmed in {done_at - started:.0f} s (Kafka down {KAFKA_DOWN_S} s, "
          f"{at_kill} confirmed at the kill, {watch.confirmed()} in all); watermarks moved {moved_after_s:.1f} s after Kafka was back; "
          f"longest stand-still with Kafka up {still_s:.1f} s")
    if os.environ.get("FLEETSIGHT_SOAK_RESULT"):  # for `make soak`
        with open(os.environ["FLEETSIGHT_SOAK_RESULT"], "w") as out:
            json.dump({"lost": report.lost, "double": report.double, "extra": (
                f"backlog of {backlog} confirmed in {done_at - started:.0f} s, moving {moved_after_s:.1f} s after Kafka was back, "
                f"still {still_s:.1f} s at most with Kafka up, restarts {sum(restarts.values())}")}, out)
    assert not restarts, f"pipeline processes exited and were restarted: {restarts}"
    assert at_kill < backlog // 2, "the backlog was nearly drained before Kafka went down: the outage tested nothing"
    assert still_s <= STILL_LIMIT_S, f"the watermarks stood still {still_s:.0f} s with Kafka up"
    assert report.lost == 0 and report.double == 0, report.render()
