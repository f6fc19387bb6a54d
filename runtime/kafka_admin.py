"""Create the Kafka topics FleetSight needs, with the settings it relies on."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from runtime.retry import retry
from runtime.settings import KafkaSettings

log = logging.getLogger("fleetsight.kafka_admin")

DAY_MS = 24 * 3600 * 1000


class TopicMismatch(RuntimeError):
    """An existing topic does not have the partition count we need."""


def topic_specs(settings: KafkaSettings) -> list[NewTopic]:
    topics = settings.kafka_topics
    n = settings.kafka_partitions
    return [
        # LogAppendTime: the broker stamps arrival time, monotonic per
        # partition, and the worker measures lateness against it, so a
        # replayed record is judged exactly as it was the first time.
        NewTopic(topics.events, n, 1, topic_configs={
            "message.timestamp.type": "LogAppendTime",
            "retention.ms": str(7 * DAY_MS),
        }),
        NewTopic(topics.deadletter, n, 1, topic_configs={"retention.ms": str(30 * DAY_MS)}),
        # Batches of absolute row values; replaying any suffix of them is harmless.
        NewTopic(topics.rows, n, 1, topic_configs={"retention.ms": str(7 * DAY_MS)}),
        NewTopic(topics.alerts, n, 1, topic_configs={"retention.ms": str(30 * DAY_MS)}),
    ]


async def ensure_topics(settings: KafkaSettings, timeout: float = 60.0, extra: list[NewTopic] | None = None) -> None:
    """Create missing topics (ours, and ``extra``); fail clearly if one exists with other partitions."""
    async def connect() -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
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
        specs = topic_specs(settings) + list(extra or [])
        existing = await admin.describe_topics([s.name for s in specs])
        partitions = {t["topic"]: len(t["partitions"]) for t in existing if t.get("error_code", 0) == 0}
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
            log.info("created Kafka topics: %s", ", ".join(s.name for s in missing))
    finally:
        await admin.close()
