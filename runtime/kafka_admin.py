"""Create the Kafka topics FleetSight needs, with the settings it relies on."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from runtime.kafka_client import kafka_security
from runtime.retry import retry
from runtime.settings import KafkaSettings
from schemas.topics import SHARDS

log = logging.getLogger("fleetsight.kafka_admin")

DAY_MS = 24 * 3600 * 1000


class TopicMismatch(RuntimeError):
    """An existing topic does not have the partition count we need."""


def replication(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and topic configs for a cluster of ``brokers``:
    3 copies with 2 in sync for a write (one broker may be down) from 3
    brokers on, else one copy (a single broker; nothing to replicate to)."""
    factor = min(3, brokers)
    return factor, {"min.insync.replicas": "2" if factor >= 3 else "1"}


def topic_specs(settings: KafkaSettings, brokers: int = 1) -> list[NewTopic]:
    topics = settings.kafka_topics
    n = settings.kafka_partitions
    rf, replicated = replication(brokers)
    return [
        # LogAppendTime: the broker stamps arrival time, monotonic per
        # partition, and the worker measures lateness against it, so a
        # replayed record is judged exactly as it was the first time.
        NewTopic(topics.events, n, rf, topic_configs={
            **replicated,
            "message.timestamp.type": "LogAppendTime",
            "retention.ms": str(7 * DAY_MS),
        }),
        NewTopic(topics.deadletter, n, rf, topic_configs={**replicated, "retention.ms": str(30 * DAY_MS)}),
        # Batches of absolute row values; replaying any suffix of them is harmless.
        NewTopic(topics.rows, n, rf, topic_configs={**replicated, "retention.ms": str(7 * DAY_MS)}),
        NewTopic(topics.alerts, n, rf, topic_configs={**replicated, "retention.ms": str(30 * DAY_MS)}),
        # Never written: the bridges' consumer group deals its partitions out
        # as MQTT shards (streams/shards.py); one more for the legacy layout.
        NewTopic(topics.bridge_shards, SHARDS + 1, rf, topic_configs=replicated),
    ]


async def ensure_topics(
    settings: KafkaSettings, timeout: float = 60.0, extra: Callable[[int], list[NewTopic]] | None = None
) -> int:
    """Create missing topics (ours, and ``extra(brokers)``), replicated as the
    cluster's size allows; fail clearly if one exists with other partitions.
    Returns the number of brokers."""
    async def connect() -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000, **kafka_security(settings))
        try:
            await admin.start()
        except BaseException:
            await admin.close()
            raise
        return admin

    try:
        admin = await retry(
            connect, what=f"connecting to Kafka at {settings.kafka_bootstrap}", errors=(KafkaConnectionError,),
            log=log, first_delay=1.0, max_delay=5.0, give_up_after=timeout,
        )
    except KafkaConnectionError as exc:
        raise RuntimeError(f"Kafka at {settings.kafka_bootstrap} does not answer: {exc}") from exc
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        specs = topic_specs(settings, brokers) + (extra(brokers) if extra else [])
        existing = await admin.describe_topics([s.name for s in specs])
        found = [t for t in existing if t.get("error_code", 0) == 0]
        partitions = {t["topic"]: len(t["partitions"]) for t in found}
        rf = replication(brokers)[0]
        for t in found:
            have_rf = min((len(p["replicas"]) for p in t["partitions"]), default=rf)
            if have_rf < rf:
                # Kafka does not re-replicate a topic by itself when brokers are added.
                log.warning("topic %s has %d replicas on a cluster of %d brokers (want %d): raise it with "
                            "kafka-reassign-partitions", t["topic"], have_rf, brokers, rf)
        missing = [s for s in specs if s.name not in partitions]
        for spec in specs:
            have = partitions.get(spec.name)
            if have is not None and have != spec.num_partitions:
                raise TopicMismatch(
                    f"topic {spec.name} has {have} partitions but FLEETSIGHT_KAFKA_PARTITIONS is "
                    f"{spec.num_partitions}; they must agree"
                )
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created it at the same moment
            log.info("created Kafka topics (replication %d): %s", rf, ", ".join(s.name for s in missing))
    finally:
        await admin.close()
    return brokers
