"""Records the consumer group's offset has moved past are still counted, once.

Faust has been seen committing past records no worker processed (see
``streams/offsets.py``). Here that is made to happen for real: with the
worker stopped, the consumer group's offset is moved past records in
Kafka, as Faust's commit would have. A worker given the partition starts
it at the offset the database says comes next, not at the group's, so
records behind a jump, and a tail that no later record follows, are
applied, and SQL ends exact.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from runtime.kafka_offsets import log_offsets
from runtime.waiting import wait_for
from streams.partitioning import partition_for
from tests.support import Stack, event, publish

pytestmark = pytest.mark.integration

CAMERA = "skip-a"


def camera_partition(stack: Stack) -> TopicPartition:
    return TopicPartition(stack.settings.kafka_topics.events, partition_for(CAMERA, stack.settings.kafka_partitions))


async def log_end(stack: Stack) -> int:
    """The next offset to be written in the camera's partition."""
    tp = camera_partition(stack)
    async with log_offsets(stack.settings) as log:
        return (await log.ends(tp.topic, [tp.partition]))[tp.partition]


async def group_offset(stack: Stack) -> int | None:
    """The worker group's committed offset in the camera's partition."""
    tp = camera_partition(stack)
    async with log_offsets(stack.settings) as log:
        return (await log.committed(stack.settings.stream_app_id, tp.topic)).get(tp.partition)


async def skip_to_end(stack: Stack) -> int:
    """Commit the stopped worker group's offset at the log end of the camera's partition."""
    tp = camera_partition(stack)
    end = await log_end(stack)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap, group_id=stack.settings.stream_app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(end, "")})
        return end
    finally:
        await consumer.stop()


async def test_records_the_group_committed_past_are_applied(stack: Stack) -> None:
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    now = int(time.time() * 1000)
    seq = 0

    def send(n: int) -> None:
        nonlocal seq
        items = []
        for _ in range(n):
            seq += 1
            items.append((topics.events(CAMERA), json.dumps(event(CAMERA, seq, now)).encode()))
        publish(stack.settings, items)

    async def counted() -> int:
        return sum(v for k, v in (await stack.minute_counts()).items() if k[0] == CAMERA)

    async def reaches(n: int) -> bool:
        stack.assert_running()
        return await counted() == n

    send(20)
    await wait_for(lambda: reaches(20), 90, "the first 20 events in SQL")
    stack.kill("worker", signal.SIGTERM)

    # A jump: 10 records committed past, then one more that Faust delivers.
    jumped_from = await log_end(stack)
    send(10)
    await wait_for(lambda: skip_to_end(stack), 30, "the group offset moved past 10 records")
    send(1)
    stack.start("worker")
    await wait_for(lambda: reaches(31), 120, "31 events after the jump")
    positioned = f"{camera_partition(stack).partition}@{jumped_from}"
    assert positioned in stack.logs["worker"].read_text(errors="replace")
    stack.kill("worker", signal.SIGTERM)

    # A tail: 5 records committed past and nothing after them.
    send(5)
    await wait_for(lambda: skip_to_end(stack), 30, "the group offset moved past 5 records")
    stack.start("worker")
    await wait_for(lambda: reaches(36), 120, "36 events after the tail was read")
    assert await counted() == 36

    # The group's offset follows the database: Faust's acks are off, the worker commits what each transaction stored.
    send(3)
    await wait_for(lambda: reaches(39), 60, "39 events")

    async def group_offset_is_the_databases() -> bool:
        rows = await stack.query("SELECT next_offset FROM stream_offsets WHERE partition = $1", camera_partition(stack).partition)
        return bool(rows) and rows[0]["next_offset"] == await log_end(stack) == await group_offset(stack)

    await wait_for(group_offset_is_the_databases, 30, "the group's committed offset at the database's")
