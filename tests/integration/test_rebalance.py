"""A rebalance that lands mid-batch is read again, never an exit (issue 35).

- A sink whose batch is held up by a database lock, frozen past its session
  while a second sink joins, commits as a member the group has dropped:
  Kafka refuses the commit (``CommitFailedError``: the sink exited with code
  1 on it), the records are read again by the partitions' new owner, and
  the UPSERTs make that harmless.
- A worker that loses every partition of its batch while applying it
  (frozen past its session, so the other worker takes them all) commits
  nothing: Faust's own commit handed aiokafka an empty map and crashed.

Each ends with both processes running and SQL exact.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Awaitable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devtools.ports import free_port
from runtime.waiting import wait_for
from streams.aggregate import bucket_camera
from streams.partitioning import partition_for
from tests.support import Stack, assert_sql_matches, event, publish, table_locked, truth, with_sentinel

pytestmark = pytest.mark.integration


def send(stack: Stack, events: list[dict]) -> None:
    topics = stack.settings.mqtt_topics
    publish(stack.settings, [(topics.events(e["camera_id"]), json.dumps(e).encode()) for e in events])


async def waiting_on_a_lock(stack: Stack, statement: str) -> int:
    """How many sessions wait for a lock in a statement starting with ``statement``.

    Asked on a connection of its own: a transaction sees pg_stat_activity as
    it was when it first looked (seen: the lock holder's own view stayed empty).
    """
    rows = await stack.query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1", f"{statement}%",
    )
    return int(rows[0]["n"])


async def group_state(stack: Stack, group: str) -> tuple[str, int]:
    """The consumer group's state and how many members it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups([group])
        _, _, state, _, _, members, *_ = described.groups[0]  # error, group id, state, protocol type, protocol, members
        return str(state), len(members)
    finally:
        await admin.close()


async def test_a_rebalance_between_a_sinks_batch_and_its_commit_is_read_again(stack: Stack) -> None:
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    now = int(time.time() * 1000)
    first = [event("rb-sink", s, now) for s in range(1, 21)]
    send(stack, first)
    await wait_for(lambda: _objects(stack, 20), 90, "the first 20 events in SQL")

    pid = stack.procs["sink"].pid
    try:
        async with table_locked(stack, "camera_minute_counts"):
            second = [event("rb-sink", s, now) for s in range(21, 41)]
            send(stack, second)
            await wait_for(lambda: waiting_on_a_lock(stack, "INSERT INTO camera_minute_counts"), 60,
                           "the sink's batch to wait on the lock")
            # Frozen past its session while a second sink joins: the group hands every partition to the
            # second. Thawed, the first finishes its batch and commits as a member the group has dropped.
            os.kill(pid, signal.SIGSTOP)
            stack.start("sink", "sink-b", stack.settings.model_copy(update={"sink_metrics_port": free_port()}))
            group = f"{stack.settings.kafka_topic_prefix}-sink"
            # Once the group has dropped the frozen one (after its session), the second reads the
            # uncommitted batch again, and its write waits too (on the first one's row locks).
            await wait_for(lambda: _at_least(waiting_on_a_lock(stack, "INSERT INTO camera_"), 2), 90,
                           "the second sink to read the batch again")
            assert await group_state(stack, group) == ("Stable", 1)
    finally:
        os.kill(pid, signal.SIGCONT)  # after the lock is gone: the thawed sink's batch goes through at once
    last = [event("rb-sink", s, now) for s in range(41, 61)]
    send(stack, last + [with_sentinel("rb-sink", 61, [])])
    await assert_sql_matches(stack, truth(first + second + last + [with_sentinel("rb-sink", 61, [])]), ["rb-sink"])
    stack.assert_running()
    # Thawed, the first sink races its commit against its heartbeat: the commit is refused
    # (CommitFailedError, the exit this guards against) or the heartbeat learns first that the
    # group dropped it and the commit goes out as a non-member's (accepted, harmless). Either
    # way it was dropped mid-batch, and it is still running.
    log = stack.logs["sink"].read_text(errors="replace")
    assert "offset commit refused" in log or "member_id was not recognized" in log, log[-3000:]


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _objects(stack: Stack, n: int) -> bool:
    return sum((await stack.minute_counts()).values()) >= n


def positioned_lines(stack: Stack, name: str, partition: int) -> list[str]:
    """``name``'s log lines saying it was positioned on ``partition`` (one per rebalance that gave it the partition)."""
    return [line for line in stack.logs[name].read_text(errors="replace").splitlines()
            if "positioned " in line and f" {partition}@" in " " + line.split("positioned ", 1)[1].replace(",", " ")]


def positioned(stack: Stack, name: str, partition: int) -> int:
    return len(positioned_lines(stack, name, partition))


def times_positioned(stack: Stack, name: str) -> int:
    return stack.logs[name].read_text(errors="replace").count("positioned ")


async def test_a_worker_that_loses_every_partition_of_its_batch_commits_nothing_and_goes_on(stack: Stack) -> None:
    workers = ("worker-1", "worker-2")
    stack.start("bridge")
    stack.start("sink")
    for name in workers:
        stack.start("worker", name)
    await stack.wait_bridge_online()
    camera = "rb-worker"
    partition = partition_for(bucket_camera(camera), stack.settings.kafka_partitions)
    now = int(time.time() * 1000)
    first = [event(camera, s, now) for s in range(1, 21)]
    send(stack, first)
    await wait_for(lambda: _objects(stack, 20), 120, "the first 20 events in SQL")
    # The owner is the worker that was positioned on the partition last.
    owner = max(workers, key=lambda w: _last_positioned_at(stack, w, partition))
    assert _last_positioned_at(stack, owner, partition), f"no worker said it holds partition {partition}"
    other = workers[1 - workers.index(owner)]

    pid = stack.procs[owner].pid
    try:
        async with table_locked(stack, "stream_offsets"):
            second = [event(camera, s, now) for s in range(21, 41)]
            send(stack, second)
            await wait_for(lambda: waiting_on_a_lock(stack, "INSERT INTO stream_offsets"), 60, "the owner's batch to wait on the lock")
            # Frozen past its session: the group gives every partition to the other worker.
            had, rejoins = positioned(stack, other, partition), times_positioned(stack, owner)
            os.kill(pid, signal.SIGSTOP)
            await wait_for(lambda: positioned(stack, other, partition) > had, 90, f"{other} to take partition {partition} over")
    finally:
        os.kill(pid, signal.SIGCONT)
    last = [event(camera, s, now) for s in range(41, 61)]
    send(stack, last + [with_sentinel(camera, 61, [])])
    await assert_sql_matches(stack, truth(first + second + last + [with_sentinel(camera, 61, [])]), [camera], timeout=180)
    # The thawed worker finishes its batch, commits nothing of partitions it lost, rejoins and stays.
    await wait_for(lambda: _running_and(stack, lambda: times_positioned(stack, owner) > rejoins), 90, f"{owner} to rejoin the group")
    text = stack.logs[owner].read_text(errors="replace")
    assert "ValueError" not in text and "Traceback" not in text, text[-3000:]


def _last_positioned_at(stack: Stack, name: str, partition: int) -> str:
    lines = positioned_lines(stack, name, partition)
    return lines[-1][:23] if lines else ""


def _running_and(stack: Stack, condition) -> bool:
    stack.assert_running()
    return bool(condition())
