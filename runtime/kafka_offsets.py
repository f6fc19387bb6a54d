"""Where a topic's records stand in Kafka: first and end offsets, a group's committed offsets, lag.

The one place that asks (issue 37: these were read in about eight places,
the worker's probe, the benchmarks and the tests, and none of the
benchmarks' readers passed the Kafka login). Every reader here takes the
process's settings, so it logs in as the process does
(``runtime.kafka_client.kafka_security``) and gives up on a frozen broker
as fast as the pipeline does (``client_timeouts``).

- :class:`LogOffsets`: a client outside any group that reads no records;
  kept open by the worker's lag probe, opened for one question by tools.
- :func:`behind`: how far ``done`` is behind ``ends``, summed.
- :func:`fetched_lag`: what a consumer of the pipeline has not read yet of
  its assigned partitions, from its last fetches (no request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from runtime.kafka_client import REQUEST_TIMEOUT_S, client_timeouts, kafka_security, partition_health
from runtime.settings import KafkaSettings


class LogOffsets:
    """Offsets of topics and groups, with the process's login; start once, ask often."""

    def __init__(self, settings: KafkaSettings, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                **client_timeouts(), **kafka_security(self.settings),
            )
            await asyncio.wait_for(consumer.start(), self.timeout_s)
            self._consumer = consumer
        return self._consumer

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap, **client_timeouts(), **kafka_security(self.settings),
            )
            await asyncio.wait_for(admin.start(), self.timeout_s)
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    def _partitions(self, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
        numbers = range(self.settings.kafka_partitions) if partitions is None else partitions
        return [TopicPartition(topic, p) for p in numbers]

    async def ends(self, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Partition -> the next offset to be written (all of the topic's partitions by default)."""
        tps = self._partitions(topic, partitions)
        found = await asyncio.wait_for((await self._client()).end_offsets(tps), self.timeout_s)
        return {tp.partition: offset for tp, offset in found.items()}

    async def firsts(self, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Partition -> the first offset still in the log."""
        tps = self._partitions(topic, partitions)
        found = await asyncio.wait_for((await self._client()).beginning_offsets(tps), self.timeout_s)
        return {tp.partition: offset for tp, offset in found.items()}

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """Partition -> the offset ``group`` committed on ``topic`` (partitions it never committed are absent)."""
        admin = await self._admin_client()
        found = await asyncio.wait_for(admin.list_consumer_group_offsets(group), self.timeout_s)
        return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic and meta.offset >= 0}

    async def trouble(self, topic: str, partitions: Iterable[int]) -> str | None:
        """What Kafka says is wrong with these partitions (no leader, copies out of sync), if anything."""
        return await partition_health(await self._client(), {TopicPartition(topic, p) for p in partitions})


@asynccontextmanager
async def log_offsets(settings: KafkaSettings) -> AsyncIterator[LogOffsets]:
    """A :class:`LogOffsets` for a few questions, closed after."""
    offsets = LogOffsets(settings)
    try:
        yield offsets
    finally:
        await offsets.close()


def behind(ends: Mapping[int, int], done: Mapping[int, int], start: Mapping[int, int] | None = None) -> int:
    """Records of ``ends`` not yet ``done`` (partition -> next offset); a partition not done counts from ``start`` (0)."""
    return sum(max(0, end - done.get(p, (start or {}).get(p, 0))) for p, end in ends.items())


def fetched_lag(consumer: AIOKafkaConsumer, read: Mapping[TopicPartition, int], unknown: int = 0) -> int:
    """Records of the consumer's assigned partitions past ``read`` (next offset per partition), by its last fetches.

    No request is made. A partition not fetched from yet (or not read yet),
    and a consumer not in its group yet, count as ``unknown``.
    """
    assigned = consumer.assignment()
    if not assigned:
        return unknown
    total = 0
    for tp in assigned:
        highwater, position = consumer.highwater(tp), read.get(tp)
        total += unknown if highwater is None or position is None else max(0, highwater - position)
    return total
