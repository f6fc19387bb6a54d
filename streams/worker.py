"""The Faust application: events in, exact per-minute aggregates out.

Run with ``fleetsight worker``; start more workers to share the partitions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import faust

from fleetsight.settings import Settings
from fleetsight.kafka_admin import ensure_topics
from streams.aggregate import Incoming, MinuteCounter, bucket_camera
from streams.partitioning import partition_for

log = logging.getLogger("fleetsight.worker")

BATCH_MAX = 1000
BATCH_WITHIN_S = 0.5
PRUNE_EVERY_S = 60.0


class CameraTable(faust.Table):
    """A table whose keys start with a camera id, kept in that camera's partition.

    Faust puts a table write in the partition of the event being processed;
    with batches from several partitions that would be wrong, so the
    partition comes from the key: the same partition the camera's events use.
    """

    def partition_for_key(self, key: Any) -> int:
        return partition_for(bucket_camera(key), self.app.conf.topic_partitions)


def create_app(settings: Settings) -> faust.App:
    """The Faust app with its topics, table and agent."""
    topics = settings.kafka_topics
    datadir = settings.services_dir / "streams" / settings.stream_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.stream_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        datadir=str(datadir),
    )
    events = app.topic(topics.events, key_serializer="raw", value_serializer="raw")
    counts_out = app.topic(topics.minute_counts, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")
    buckets = app.tables.add(
        CameraTable(
            app,
            name="minute-buckets",
            default=None,
            beacon=app.tables.beacon,
            partitions=settings.kafka_partitions,
            help="Per (camera, class, minute): count and the seqs counted.",
        )
    )
    counter = MinuteCounter(buckets, int(settings.late_after_s * 1000), topics.events)
    last_prune: dict[int, float] = {}

    # concurrency=1: Faust can commit an offset past an in-flight event when
    # an agent runs with concurrency > 1.
    @app.agent(events, concurrency=1)
    async def aggregate(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            records = [
                Incoming(e.message.partition, int(e.message.timestamp * 1000), e.message.value) for e in batch
            ]
            result = counter.process(records)
            # Absolute values of every bucket this batch touched, duplicates
            # included: after a crash the replayed batch re-sends them, so the
            # sink gets them even if the first send was lost.
            for key, count in result.counts.items():
                await counts_out.send(key=key.encode(), value=count.to_record())
            for letter in result.dead:
                await deadletter.send(key=(letter.camera_id or "").encode() or None, value=letter.to_record())
            if result.dead or result.duplicates:
                log.info(
                    "batch of %d: %d applied, %d duplicates dropped, %d dead-lettered",
                    len(records), result.applied, result.duplicates, len(result.dead),
                )
            now = time.monotonic()
            for partition in {r.partition for r in records}:
                if now - last_prune.get(partition, 0.0) >= PRUNE_EVERY_S:
                    last_prune[partition] = now
                    n = settings.kafka_partitions
                    pruned = counter.prune(partition, lambda k, p=partition: partition_for(bucket_camera(k), n) == p)
                    if pruned:
                        log.info("partition %d: closed %d minute buckets past retention", partition, len(pruned))

    return app


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Entry point of ``fleetsight worker`` (Faust's own worker command)."""
    asyncio.run(ensure_topics(settings))
    # asyncio.run closed its loop; Faust needs a current one of its own.
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    # Faust's worker otherwise serves its web UI on 0.0.0.0:6066.
    sys.argv = ["fleetsight-worker", "worker", "--without-web", f"--loglevel={loglevel}"]
    app.main()
    return 0
