"""Processes that stall for real (a database lock) say why and exit for a restart; a fault Kafka reports is waited out.

Each stall is a real one: a transaction of the test holds a lock the
process needs. The stall timeout is cut to a few seconds; the process must
warn on ``/health``, exit with 70, name what it waited on, and, restarted,
finish the job with the counts exact. A Kafka broker stopped with SIGSTOP
is not a hang of the bridge's: its client times out and says so, and the
bridge waits (issue 35), far past the stall timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from devtools.ports import free_port
from devtools.services import Kafka
from fleetsight.mqtt_users import admin_settings
from runtime.mqtt import read_retained
from runtime.waiting import wait_for
from runtime.watchdog import STALL_EXIT
from schemas.codec import decode_ack, encode_ack
from schemas.topics import SHARDS
from tests.support import SENTINEL, Stack, event, publish, scrape, table_locked, total, truth

pytestmark = pytest.mark.integration

TIMEOUT_S = 6.0


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


async def stalls_and_exits(stack: Stack, name: str, port: int, what: str) -> None:
    """Wait until ``name`` exits with the stall code; it must have said 503 on /health first."""
    proc = stack.procs[name]
    statuses: set[int | None] = set()

    def exited() -> bool:
        statuses.add(health(port))
        return proc.poll() is not None

    await wait_for(exited, TIMEOUT_S + 60, f"{name} to give up", interval=0.1)
    stack.procs.pop(name)
    log = stack.logs[name].read_text(errors="replace")
    assert proc.returncode == STALL_EXIT, f"{name} exited with {proc.returncode}\n{log[-3000:]}"
    assert f"{name} stalled: no progress for" in log and what in log, log[-3000:]
    assert 503 in statuses, f"/health of {name} never said stalled: {statuses}"


async def test_worker_and_sink_blocked_by_the_database_exit_and_recover_exactly(stack_factory) -> None:
    ports = {name: free_port() for name in ("worker", "sink")}
    stack = await stack_factory(stall_timeout_s=TIMEOUT_S, worker_metrics_port=ports["worker"], sink_metrics_port=ports["sink"])
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    now = int(time.time() * 1000)
    sent = [event("wd-a", s, now) for s in range(1, 21)]

    def send(events: list[dict]) -> None:
        publish(stack.settings, [(topics.events(e["camera_id"]), json.dumps(e).encode()) for e in events])

    async def counted(n: int) -> bool:
        return sum((await stack.minute_counts()).values()) >= n

    def health_command(process: str) -> int:
        """``fleetsight health``, as the compose healthcheck runs it."""
        env = {**os.environ, **stack.settings.env()}
        return subprocess.run([sys.executable, "-m", "fleetsight", "health", process], env=env, capture_output=True).returncode

    send(sent)
    await wait_for(lambda: counted(20), 90, "the first 20 events in SQL")
    assert health(ports["worker"]) == 200 and health(ports["sink"]) == 200
    assert health_command("worker") == 0

    # 1. The worker's state table is locked against writes: its batch waits on the lock.
    async with table_locked(stack, "stream_offsets"):
        more = [event("wd-a", s, now) for s in range(21, 31)]
        send(more)
        await stalls_and_exits(stack, "worker", ports["worker"], "locking the state of partitions")
        assert health_command("worker") == 1  # gone: the healthcheck says so too
    stack.start("worker")  # as compose's restart: would

    # 2. The public table is locked: the sink's UPSERT waits on the lock.
    async with table_locked(stack, "camera_minute_counts"):
        last = [event("wd-a", s, now) for s in range(31, 41)] + [event("wd-a", 41, now, SENTINEL)]
        send(last)
        await stalls_and_exits(stack, "sink", ports["sink"], "writing")
    stack.start("sink")

    expected = truth(sent + more + last)
    await wait_for(lambda: counted(41), 90, "all 41 events in SQL after the restarts")
    assert await stack.minute_counts() == dict(expected)


async def test_bridge_waits_out_a_frozen_kafka_and_its_lanes_say_offline_when_it_stops(stack_factory) -> None:
    """A frozen Kafka is a fault the bridge reports and waits out, however long past its stall timeout;
    what came meanwhile is forwarded once Kafka answers; and a bridge stopped while Kafka is frozen
    again stops at once, leaving every lane's retained status ``offline``."""
    port = free_port()
    stack = await stack_factory(stall_timeout_s=TIMEOUT_S, bridge_metrics_port=port)
    stack.start("bridge")
    await stack.wait_bridge_online()
    settings, topics = stack.settings, stack.settings.mqtt_topics
    kafka = Kafka(settings).pid()
    assert kafka is not None, "the local Kafka is not running"

    def faults() -> float:
        return total(scrape(port), r"fleetsight_bridge_kafka_faults_total\{.*\}")

    def watermark() -> int:
        found = read_retained(admin_settings(settings), topics.ack("wd-k"))
        return max((decode_ack(payload).seq for payload in found.values() if payload), default=0)

    now = int(time.time() * 1000)
    # The camera's outbox starts at seq 1 (retained, as an edge says it): the bridge's watermark starts below it.
    await asyncio.to_thread(publish, settings, [(topics.outbox("wd-k"), encode_ack("wd-k", 1))], True)
    os.kill(kafka, signal.SIGSTOP)
    try:
        await asyncio.to_thread(publish, settings, [(topics.events("wd-k"), json.dumps(event("wd-k", 1, now)).encode())])
        # Each look at the frozen Kafka reports a fault; eight of them take over three stall timeouts.
        await wait_for(lambda: faults() >= 8, 120, "the bridge to report Kafka's fault eight times")
        stack.assert_running()
        assert watermark() == 0
    finally:
        os.kill(kafka, signal.SIGCONT)
    await wait_for(lambda: watermark() == 1, 60, "the event that waited to reach Kafka and be acked")
    stack.assert_running()
    # Kafka dropped the frozen time's group sessions: the bridge rejoins and serves every lane again.
    await stack.wait_bridge_online()

    before = faults()
    os.kill(kafka, signal.SIGSTOP)
    try:
        await asyncio.to_thread(publish, settings, [(topics.events("wd-k"), json.dumps(event("wd-k", 2, now)).encode())])
        await wait_for(lambda: faults() > before, 60, "the bridge to report the second freeze")
        started = time.monotonic()
        stack.kill("bridge", signal.SIGTERM)  # waits for the exit (30 s at most)
        stopped_s = time.monotonic() - started
    finally:
        os.kill(kafka, signal.SIGCONT)
    log = stack.logs["bridge"].read_text(errors="replace")
    assert "Kafka did not confirm within" in log, log[-3000:]
    statuses = read_retained(admin_settings(settings), topics.all_bridge_status)
    assert len(statuses) == SHARDS + 1 and set(statuses.values()) == {b"offline"}, statuses
    print(f"bridge stopped in {stopped_s:.1f} s with Kafka frozen")
