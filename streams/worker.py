"""The Faust application: events in, exact aggregates, camera status and alerts out.

Run with ``fleetsight worker``; start more workers to share the partitions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fleetsight import metrics
from fleetsight.kafka_admin import ensure_topics
from fleetsight.settings import Settings
from schemas.aggregates import ALERTS, Row, encode_rows
from streams.aggregate import Incoming, MinuteAggregator, bucket_camera
from streams.gaps import OffsetGuard
from streams.partitioning import partition_for
from streams.status import AlertConfig, FleetStatus, OccupancyRule

log = logging.getLogger("fleetsight.worker")

BATCH_MAX = 1000
ROWS_PER_RECORD = 500
BATCH_WITHIN_S = 0.5
PRUNE_EVERY_S = 60.0


class CameraTable(faust.Table):
    """A table whose keys start with a camera id, kept in that camera's partition.

    Faust puts a table write in the partition of the event being processed;
    with batches from several partitions, or writes from a timer, that would
    be wrong, so the partition comes from the key: the partition the
    camera's events use. A worker that takes the partition over recovers
    exactly that camera's state.
    """

    def partition_for_key(self, key: Any) -> int:
        return partition_for(bucket_camera(key), self.app.conf.topic_partitions)


class GapReader:
    """Reads given offsets of the events topic directly, outside the consumer group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka_topics.events
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, group: str, partition: int) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            tp = TopicPartition(self.topic, partition)
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
        finally:
            await admin.close()
        meta = offsets.get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else None

    async def read(self, partition: int, first: int, last: int) -> list[Incoming]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
            await self._consumer.start()
        tp = TopicPartition(self.topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, first)
        out: list[Any] = []
        deadline = time.monotonic() + 120
        while not out or out[-1].offset < last:
            if time.monotonic() > deadline:
                # Crash rather than go on without them: the batch is not acked yet.
                raise RuntimeError(f"cannot read offsets {first}-{last} of {self.topic}[{partition}]")
            for message in (await self._consumer.getmany(tp, timeout_ms=5000)).get(tp, []):
                if message.offset <= last:
                    out.append(message)
        return [Incoming(m.partition, m.timestamp, m.value) for m in out]


TABLES = {
    "minute-buckets": "Per-minute row sums and the seqs folded into them.",
    "camera-state": "Per-camera status, seqs received and open alerts.",
}


def changelog_topics(settings: Settings) -> list[NewTopic]:
    """The tables' changelog topics, as Faust would create them.

    Made before the worker starts: when Faust creates them itself, they are
    missing from the first metadata ("not found in cluster metadata"), the
    subscription changes and the group rebalances while the first batch is
    in flight. Seen twice: a worker hung for good in that rebalance
    ("wait_empty: Waiting for tasks") with no offset ever committed.
    """
    return [
        NewTopic(f"{settings.stream_app_id}-{name}-changelog", settings.kafka_partitions, 1,
                 topic_configs={"cleanup.policy": "compact"})
        for name in TABLES
    ]


def alert_config(settings: Settings) -> AlertConfig:
    return AlertConfig(
        offline_after_s=settings.offline_after_s,
        clear_after_s=settings.alert_clear_s,
        backlog_min=settings.backlog_alert_min,
        backlog_reports=settings.backlog_alert_reports,
        occupancy=tuple(OccupancyRule(**rule) for rule in settings.occupancy_alerts),
    )


def create_app(settings: Settings) -> faust.App:
    """The Faust app with its topics, tables, agent and timer."""
    topics = settings.kafka_topics
    partitions = settings.kafka_partitions
    datadir = settings.services_dir / "streams" / settings.stream_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.stream_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.stream_session_timeout_s / 3),
        datadir=str(datadir),
        # No standby replicas: a worker that takes a partition over reads its
        # table from the changelog instead of promoting a standby copy. Seen
        # with standbys (the default, 1): after a SIGKILL, SQL short by 1-7
        # events per bucket for the dead worker's partitions, i.e. the
        # survivor sent smaller absolute rows over the right ones (scale-out
        # test: 2 runs of 13). Without them: no loss in 30 runs, but 2 hangs,
        # one in Faust's active recovery ("No event received for active tp",
        # faust-streaming #74), which every takeover now goes through, one
        # silent after "Faust skipped offsets". A stall is seen and restarted;
        # a short count is not. Issue 12 takes this state out of Faust.
        table_standby_replicas=0,
    )
    events = app.topic(topics.events, key_serializer="raw", value_serializer="raw")
    rows_out = app.topic(topics.rows, key_serializer="raw", value_serializer="raw")
    alerts_out = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")

    def table(name: str, help: str) -> CameraTable:
        return app.tables.add(
            CameraTable(app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions, help=help)
        )

    buckets = table("minute-buckets", TABLES["minute-buckets"])
    cameras = table("camera-state", TABLES["camera-state"])
    aggregator = MinuteAggregator(buckets, int(settings.late_after_s * 1000), topics.events)
    status = FleetStatus(cameras, alert_config(settings), clock=lambda: int(time.time() * 1000))
    last_prune: dict[int, float] = {}

    def owns(partition: int):
        return lambda key: partition_for(bucket_camera(key), partitions) == partition

    async def emit(rows: list[Row]) -> None:
        for start in range(0, len(rows), ROWS_PER_RECORD):
            await rows_out.send(value=encode_rows(rows[start : start + ROWS_PER_RECORD]))
        for row in rows:
            if row.table == ALERTS.name:
                await alerts_out.send(key=str(row.values["alert_id"]).encode(), value=row.to_record())

    guard = OffsetGuard()
    reader = GapReader(settings)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        guard.forget({tp.partition for tp in revoked if tp.topic == topics.events})

    async def skipped_records(batch: list) -> list[Incoming]:
        """Records of our partitions that Faust jumped over (see streams/gaps.py)."""
        offsets: dict[int, list[int]] = {}
        for e in batch:
            offsets.setdefault(e.message.partition, []).append(e.message.offset)
        found: list[Incoming] = []
        for partition, seen in offsets.items():
            seen.sort()
            if not guard.knows(partition):
                committed = await reader.committed(settings.stream_app_id, partition)
                guard.start(partition, seen[0] if committed is None else committed)
            for gap in guard.check(partition, seen):
                log.warning("Faust skipped offsets %d-%d of partition %d; reading them directly", gap.first, gap.last, partition)
                metrics.WORKER_SKIPPED_RECORDS.inc(gap.size)
                found += await reader.read(partition, gap.first, gap.last)
        return found

    async def durable() -> None:
        """Wait until this batch's table writes and rows are in Kafka.

        The batch's offsets are committed once we ask for the next batch, and
        Faust's own pre-commit flush gives up after 0.1 s without a message
        sent (ProducerBuffer.flush_atmost), so table writes could still be
        queued when their offsets are committed: a crash then loses them.
        Seen: counts short by one or two after a worker was killed.
        """
        buffer = app.producer.buffer
        while buffer.size:
            await buffer.flush()
        await app.producer.flush()

    def observe(records: list[Incoming], result: Any, started: float) -> None:
        now_ms = time.time() * 1000
        for record in records:
            metrics.WORKER_LAG.observe(max(0.0, (now_ms - record.timestamp_ms) / 1000))
        metrics.WORKER_EVENTS.labels("applied").inc(result.applied)
        metrics.WORKER_EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.WORKER_EVENTS.labels("late").inc(len(result.late))
        for letter in result.dead:
            metrics.WORKER_DEADLETTERS.labels(letter.reason).inc()
        metrics.WORKER_ROWS.inc(len(result.rows))
        metrics.WORKER_BATCH.observe(time.perf_counter() - started)

    # concurrency=1: Faust can commit an offset past an in-flight event when
    # an agent runs with concurrency > 1.
    @app.agent(events, concurrency=1)
    async def aggregate(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            started = time.perf_counter()
            records = await skipped_records(batch)
            records += [Incoming(e.message.partition, int(e.message.timestamp * 1000), e.message.value) for e in batch]
            result = aggregator.process(records)
            observe(records, result, started)
            # Absolute values of every row this batch touched, duplicates
            # included: after a crash the replayed batch sends them again, so
            # the sink gets them even if the first send was lost.
            await emit(list(result.rows.values()) + status.observe(result.events, result.late))
            for letter in result.dead:
                await deadletter.send(key=(letter.camera_id or "").encode() or None, value=letter.to_record())
            await durable()
            if result.dead or result.duplicates:
                log.info(
                    "batch of %d: %d applied, %d duplicates dropped, %d dead-lettered",
                    len(records), result.applied, result.duplicates, len(result.dead),
                )
            now = time.monotonic()
            for partition in {r.partition for r in records}:
                if now - last_prune.get(partition, 0.0) >= PRUNE_EVERY_S:
                    last_prune[partition] = now
                    pruned = aggregator.prune(partition, owns(partition))
                    if pruned:
                        log.info("partition %d: closed %d minute buckets past retention", partition, len(pruned))

    @app.timer(interval=settings.status_sweep_s)
    async def sweep() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events}
        if owned:
            await emit(status.sweep(lambda camera: partition_for(camera, partitions) in owned))

    return app


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Entry point of ``fleetsight worker`` (Faust's own worker command)."""
    asyncio.run(ensure_topics(settings, extra=changelog_topics(settings)))
    # asyncio.run closed its loop; Faust needs a current one of its own.
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    metrics.serve(settings.worker_metrics_port, settings.metrics_bind)
    # Faust's worker otherwise serves its web UI on 0.0.0.0:6066.
    sys.argv = ["fleetsight-worker", "worker", "--without-web", f"--loglevel={loglevel}"]
    app.main()
    return 0
