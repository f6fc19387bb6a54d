"""Which MQTT shards a bridge carries, dealt out by a Kafka consumer group.

The bridges join one consumer group on an empty topic whose partitions stand
for the shards (``schemas.topics.SHARDS`` of them, and one more for cameras
in the layout from before shards). Kafka's group protocol gives each
partition to exactly one live member, and hands a dead member's partitions
to the others once its session times out. So the bridges share the cameras
with no protocol of their own, and the one carrying a shard changes only
through a rebalance: aiokafka's eager protocol revokes every member's
partitions (the listener below stops those lanes) before it assigns any.
Nothing is ever written to the topic or committed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from runtime.kafka_client import consumer_timeouts, kafka_security
from runtime.settings import BridgeSettings
from schemas.topics import SHARDS

log = logging.getLogger("fleetsight.bridge")

LaneId = int | None  # a shard, or None for the layout from before shards
LaneHandler = Callable[[set[LaneId]], Awaitable[None]]


def lane_of(partition: int) -> LaneId:
    """The lane a partition of the shards topic stands for."""
    return None if partition == SHARDS else partition


def lane_name(lane: LaneId) -> str:
    return "legacy" if lane is None else str(lane)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, revoke: LaneHandler, assign: LaneHandler) -> None:
        self._revoke, self._assign = revoke, assign

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoke({lane_of(tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assign({lane_of(tp.partition) for tp in assigned})


async def hold_shards(settings: BridgeSettings, revoke: LaneHandler, assign: LaneHandler, stop: asyncio.Event) -> None:
    """Be a member of the bridges' group until ``stop``; ``revoke``/``assign``
    get the lanes as the group takes them away and hands them over."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.kafka_topic_prefix}-bridges",
        client_id=f"bridge-{socket.gethostname()}",
        enable_auto_commit=False,
        **consumer_timeouts(settings.bridge_session_timeout_s),
        **kafka_security(settings),
    )
    consumer.subscribe([settings.kafka_topics.bridge_shards], listener=_Listener(revoke, assign))
    await consumer.start()
    try:
        while not stop.is_set():
            # The topic stays empty. Polling is what keeps this process a
            # member: aiokafka leaves the group after max_poll_interval_ms
            # without a call.
            await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()  # leaves the group: the others take over at once
