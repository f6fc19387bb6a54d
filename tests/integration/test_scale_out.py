"""Two stream workers share the partitions; one dies mid-run; the totals stay exact.

Also measures the failover time: from the SIGKILL until every camera's
status row in SQL has moved again (the dead worker's cameras are the last
to move). With ``FLEETSIGHT_SOAK_RESULT`` set, writes the run's figures
there as JSON for ``make soak``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections import Counter

import pytest

from runtime.waiting import wait_for
from tests.support import SENTINEL, Stack, event, publish, truth

pytestmark = pytest.mark.integration

CAMERAS = [f"scale-{i:02d}" for i in range(16)]  # spread over all 8 partitions


async def test_two_workers_one_killed_mid_run_totals_stay_exact(stack: Stack) -> None:
    stack.start("bridge")
    stack.start("sink")
    stack.start("worker", "worker-1")
    stack.start("worker", "worker-2")
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    rng = random.Random(2)
    sent: list[dict] = []
    seqs = {c: 0 for c in CAMERAS}
    lock = threading.Lock()

    def wave(n: int) -> None:
        items = []
        now = int(time.time() * 1000)
        with lock:
            for _ in range(n):
                cam = rng.choice(CAMERAS)
                seqs[cam] += 1
                e = event(cam, seqs[cam], now - rng.randint(0, 300_000), rng.choice(["person", "car"]))
                sent.append(e)
                items.append((topics.events(cam), json.dumps(e).encode()))
                if rng.random() < 0.1:  # a resend now and then
                    items.append((topics.events(cam), json.dumps(rng.choice(sent)).encode()))
        publish(stack.settings, items)

    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            wave(100)
            stop.wait(0.2)  # a steady trickle, like a fleet

    async def both_workers_busy() -> bool:
        stack.assert_running()
        logs = [stack.logs[w].read_text(errors="replace") for w in ("worker-1", "worker-2")]
        return all("batch of" in text or "Worker]: Ready" in text for text in logs) and bool(await stack.minute_counts())

    async def every_camera_moved_since(t: float) -> bool:
        stack.assert_running()
        rows = await stack.query("SELECT count(*) AS n FROM camera_status WHERE updated_at > to_timestamp($1)", t)
        return rows[0]["n"] == len(CAMERAS)

    producer = threading.Thread(target=stream, daemon=True)
    producer.start()
    try:
        await wait_for(both_workers_busy, 120, "both workers to take partitions and write rows")
        stack.kill("worker-2", signal.SIGKILL)
        killed_at, killed_sent = time.time(), len(sent)
        # The trickle goes on: the rows of the dead worker's cameras move again once the survivor has them.
        await wait_for(lambda: every_camera_moved_since(killed_at), 240, "every camera's rows moving after the kill")
        failover_s = time.time() - killed_at
        await wait_for(lambda: len(sent) >= killed_sent + 1500, 120, "events sent after the kill")
    finally:
        stop.set()
        await asyncio.to_thread(producer.join, 30)
    # The last event of each camera: once it is in SQL, all before it are.
    now = int(time.time() * 1000)
    sentinels = [event(c, seqs[c] + 1, now, SENTINEL) for c in CAMERAS]
    publish(stack.settings, [(topics.events(e["camera_id"]), json.dumps(e).encode()) for e in sentinels])
    unique = {(e["camera_id"], e["seq"]): e for e in sent + sentinels}.values()
    expected = truth(unique)

    async def sentinels_in() -> bool:
        stack.assert_running()
        got = await stack.minute_counts()
        return all(any(k[0] == cam and k[1] == SENTINEL for k in got) for cam in CAMERAS)

    await wait_for(sentinels_in, 240, "the sentinel rows of every camera")
    got = Counter({k: v for k, v in (await stack.minute_counts()).items() if k[0] in CAMERAS})
    lost, double = sum((expected - got).values()), sum((got - expected).values())
    if os.environ.get("FLEETSIGHT_SOAK_RESULT"):
        with open(os.environ["FLEETSIGHT_SOAK_RESULT"], "w") as out:
            json.dump({"failover_s": round(failover_s, 1), "lost": lost, "double": double}, out)
    assert (lost, double) == (0, 0), f"lost {lost}, double-counted {double}"
    assert got == expected
