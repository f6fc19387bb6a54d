"""The Faust application: events in, exact aggregates, camera status and alerts out.

Run with ``fleetsight worker``; start more workers to share the partitions.

Faust consumes the events topic and balances its partitions over the
workers; the state the aggregates need lives in PostgreSQL
(``streams/state.py``), one transaction per batch, so a worker that takes a
partition over has nothing to restore, and a record that is replayed, or
that Faust jumped over, cannot change a count. A stall watchdog
(``runtime/watchdog.py``) exits the process when records wait and none is
applied.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.exc import DBAPIError, OperationalError

from runtime import metrics
from runtime.kafka_admin import ensure_topics
from runtime.retry import retry
from runtime.settings import WorkerSettings
from runtime.watchdog import Watchdog
from schemas.aggregates import ALERTS, Row, encode_rows
from schemas.codec import Event
from schemas.deadletter import DeadLetter
from streams import metrics as stream_metrics
from streams.aggregate import BatchResult, Incoming, MinuteAggregator, bucket_camera
from streams.gaps import find_gaps
from streams.partitioning import partition_for
from streams.state import Batch, StateStore
from streams.status import AlertConfig, FleetStatus, OccupancyRule

log = logging.getLogger("fleetsight.worker")

BATCH_MAX = 1000
ROWS_PER_RECORD = 500
BATCH_WITHIN_S = 0.5
PRUNE_EVERY_S = 60.0
PROBE_EVERY_S = 5.0
# A partition this worker owns, behind its log end, from which Faust has
# delivered nothing for this long, is read directly (at most CATCH_UP_MAX
# records a time): records Faust committed past at the tail of a partition
# would otherwise wait for the next record to reveal the jump.
CATCH_UP_AFTER_S = 15.0
CATCH_UP_MAX = 2000
KAFKA_TIMEOUT_S = 30.0
DB_ERRORS = (OperationalError, DBAPIError, OSError, asyncio.TimeoutError)


class DirectReader:
    """Reads the events topic directly, outside the consumer group."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.topic = settings.kafka_topics.events
        self._consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
            await asyncio.wait_for(consumer.start(), KAFKA_TIMEOUT_S)
            self._consumer = consumer
        return self._consumer

    async def ends(self, partitions: list[int]) -> tuple[dict[int, int], dict[int, int]]:
        """First and next-to-be-written offset of each partition."""
        consumer = await self._started()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        first = await asyncio.wait_for(consumer.beginning_offsets(tps), KAFKA_TIMEOUT_S)
        end = await asyncio.wait_for(consumer.end_offsets(tps), KAFKA_TIMEOUT_S)
        return {tp.partition: o for tp, o in first.items()}, {tp.partition: o for tp, o in end.items()}

    async def read(self, partition: int, first: int, last: int) -> list[Incoming]:
        """Offsets ``first``..``last`` (those still in the log) of ``partition``."""
        consumer = await self._started()
        tp = TopicPartition(self.topic, partition)
        start = max(first, (await asyncio.wait_for(consumer.beginning_offsets([tp]), KAFKA_TIMEOUT_S))[tp])
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[Any] = []
        deadline = time.monotonic() + 120
        while start <= last and (not out or out[-1].offset < last):
            if time.monotonic() > deadline:
                # Raise rather than go on without them: the batch is not applied yet.
                raise RuntimeError(f"cannot read offsets {first}-{last} of {self.topic}[{partition}]")
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if message.offset <= last:
                    out.append(message)
        return [Incoming(m.partition, m.timestamp, m.value, m.offset) for m in out]

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def alert_config(settings: WorkerSettings) -> AlertConfig:
    return AlertConfig(
        offline_after_s=settings.offline_after_s,
        clear_after_s=settings.alert_clear_s,
        backlog_min=settings.backlog_alert_min,
        backlog_reports=settings.backlog_alert_reports,
        occupancy=tuple(OccupancyRule(**rule) for rule in settings.occupancy_alerts),
        clock_skew_s=settings.clock_skew_alert_s,
    )


class Worker:
    """Applies batches of event records to the state in PostgreSQL and sends the rows out.

    One batch at a time per process (``lock``): the agent's batches, the
    status sweep and the catch-up reads all change the same state.
    """

    def __init__(self, settings: WorkerSettings, app: faust.App, watchdog: Watchdog) -> None:
        self.settings = settings
        self.app = app
        self.watchdog = watchdog
        self.topics = settings.kafka_topics
        self.partitions = settings.kafka_partitions
        self.store = StateStore.connect(settings.database_url, settings.stream_app_id, self.topics.events)
        self.aggregator = MinuteAggregator({}, int(settings.late_after_s * 1000), self.topics.events)
        self.status = FleetStatus({}, alert_config(settings), clock=lambda: int(time.time() * 1000))
        self.reader = DirectReader(settings)  # gaps, under the lock
        self.prober = DirectReader(settings)  # log ends and catch-up reads, from the probe
        self.lock = asyncio.Lock()
        self.waiting = 0  # records in the log not yet applied, in this worker's partitions
        self.delivered: dict[int, float] = {}  # partition -> when a batch of it last came
        self._pruned: dict[int, float] = {}
        self._applied: dict[int, int] = {}
        self.rows_out = app.topic(self.topics.rows, key_serializer="raw", value_serializer="raw")
        self.alerts_out = app.topic(self.topics.alerts, key_serializer="raw", value_serializer="raw")
        self.deadletter = app.topic(self.topics.deadletter, key_serializer="raw", value_serializer="raw")

    def partition_of(self, key_or_camera: str) -> int:
        return partition_for(bucket_camera(key_or_camera), self.partitions)

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topics.events}

    # --- a batch ---------------------------------------------------------------------

    async def apply(self, records: list[Incoming]) -> None:
        """Apply ``records`` (from any partitions) in one transaction; retried while the database is away."""
        started = time.perf_counter()
        async with self.lock:
            result = await retry(
                lambda: self._apply(records), what=f"applying {len(records)} records to the database",
                errors=DB_ERRORS, log=log, watchdog=self.watchdog,
            )
        now = time.monotonic()
        for partition in {r.partition for r in records}:
            self.delivered[partition] = now
        self.watchdog.progress("waiting for records")
        self._observe(records, result, started)

    async def _apply(self, records: list[Incoming]) -> BatchResult:
        partitions = sorted({r.partition for r in records})
        self.watchdog.busy(f"locking the state of partitions {partitions}")
        async with self.store.batch(partitions) as tx:
            self.watchdog.busy(f"checking offsets of partitions {partitions}")
            found: list[Incoming] = []
            next_offsets: dict[int, int | None] = {}
            for p in partitions:
                expected = tx.next_offset(p)
                if expected is None:  # nothing of it applied ever: from the log's start
                    expected = (await self.reader.ends([p]))[0][p]
                seen = sorted(r.offset for r in records if r.partition == p and r.offset >= 0)
                gaps, next_offsets[p] = find_gaps(p, expected, seen)
                for gap in gaps:
                    log.warning("Faust skipped offsets %d-%d of partition %d; reading them directly", gap.first, gap.last, p)
                    self.watchdog.busy(f"reading skipped offsets {gap.first}-{gap.last} of partition {p}")
                    stream_metrics.WORKER_SKIPPED_RECORDS.inc(gap.size)
                    found += await self.reader.read(p, gap.first, gap.last)
            decoded = self.aggregator.read(found + records)
            self.watchdog.busy("reading state from the database")
            self.aggregator.table = buckets = await tx.buckets(MinuteAggregator.keys(decoded))
            self.status.table = cameras = await tx.cameras({e.camera_id for d in decoded for e in d.items if isinstance(e, Event)})
            result = self.aggregator.apply(decoded)
            # Absolute values of every row this batch touched, duplicates
            # included: a replayed batch sends them again, so the sink gets
            # them even if a crash came between this send and the commit.
            # Sent before the commit: a batch whose state is saved has its
            # rows in Kafka.
            await self.emit(list(result.rows.values()) + self.status.observe(result.events, result.late), result.dead)
            self.watchdog.busy("writing state to the database")
            await tx.save_buckets(buckets, self.partition_of)
            await tx.save_cameras(cameras, self.partition_of)
            for p in partitions:
                await tx.advance(p, next_offsets[p], self.aggregator.stream_time.get(p, 0))
                await self._prune(tx, p)
            self.watchdog.busy("committing")
        if result.dead or result.duplicates:
            log.info(
                "batch of %d: %d applied, %d duplicates dropped, %d dead-lettered",
                len(decoded), result.applied, result.duplicates, len(result.dead),
            )
        return result

    async def _prune(self, tx: Batch, partition: int) -> None:
        now = time.monotonic()
        if now - self._pruned.get(partition, 0.0) < PRUNE_EVERY_S:
            return
        self._pruned[partition] = now
        horizon = self.aggregator.horizon(partition, tx.stream_time(partition))
        if horizon is not None:
            pruned = await tx.prune(partition, horizon)
            if pruned:
                log.info("partition %d: closed %d minute buckets past retention", partition, pruned)

    async def emit(self, rows: list[Row], dead: list[DeadLetter]) -> None:
        """Send rows, alerts and dead letters, and wait until Kafka has them all."""
        self.watchdog.busy(f"sending {len(rows)} rows to Kafka")
        for start in range(0, len(rows), ROWS_PER_RECORD):
            await self.rows_out.send(value=encode_rows(rows[start : start + ROWS_PER_RECORD]))
        for row in rows:
            if row.table == ALERTS.name:
                await self.alerts_out.send(key=str(row.values["alert_id"]).encode(), value=row.to_record())
        for letter in dead:
            await self.deadletter.send(key=(letter.camera_id or "").encode() or None, value=letter.to_record())
        # Faust's own flush gives up after 0.1 s without a message sent
        # (ProducerBuffer.flush_atmost); this waits until all are out.
        buffer = self.app.producer.buffer
        while buffer.size:
            await buffer.flush()
        await self.app.producer.flush()

    def _observe(self, records: list[Incoming], result: BatchResult, started: float) -> None:
        now_ms = time.time() * 1000
        for record in records:
            stream_metrics.WORKER_LAG.observe(max(0.0, (now_ms - record.timestamp_ms) / 1000))
        stream_metrics.WORKER_EVENTS.labels("applied").inc(result.applied)
        stream_metrics.WORKER_EVENTS.labels("duplicate").inc(result.duplicates)
        stream_metrics.WORKER_EVENTS.labels("late").inc(len(result.late))
        for letter in result.dead:
            stream_metrics.WORKER_DEADLETTERS.labels(letter.reason).inc()
        stream_metrics.WORKER_ROWS.inc(len(result.rows))
        stream_metrics.WORKER_BATCH.observe(time.perf_counter() - started)

    # --- time passing -------------------------------------------------------------------

    async def sweep(self) -> None:
        """Cameras of this worker's partitions going offline, offline alerts clearing."""
        owned = sorted(self.owned())
        if not owned:
            return

        async def go() -> None:
            async with self.store.batch(owned) as tx:
                self.status.table = cameras = await tx.cameras(partitions=owned)
                rows = self.status.sweep(lambda camera: self.partition_of(camera) in owned)
                if rows:
                    await self.emit(rows, [])
                    await tx.save_cameras(cameras, self.partition_of)

        async with self.lock:
            await retry(go, what="status sweep", errors=DB_ERRORS, log=log, watchdog=self.watchdog)
            self.watchdog.busy("waiting for records")

    async def probe(self) -> None:
        """Every few seconds: how many records wait, whether any partition moved, catch-up reads."""
        everything = list(range(self.partitions))
        while True:
            await asyncio.sleep(PROBE_EVERY_S)  # the probe's period
            try:
                first, end = await self.prober.ends(everything)
            except Exception as exc:  # noqa: BLE001 - a failed probe is retried; the watchdog judges
                log.warning("lag probe: Kafka did not answer (%s: %s)", exc.__class__.__name__, exc)
                continue
            try:
                applied = await asyncio.wait_for(self.store.applied(), KAFKA_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                # Judge against what was applied when the database last
                # answered: new records then count as waiting.
                log.warning("lag probe: the database did not answer (%s: %s)", exc.__class__.__name__, exc)
                applied = self._applied
            owned = self.owned()
            mine = owned or set(everything)  # nothing assigned (a rebalance): the group as a whole
            behind = {p: max(0, end[p] - applied.get(p, first[p])) for p in mine}
            self.waiting = sum(behind.values())
            if any(applied.get(p) != self._applied.get(p) for p in mine):
                self.watchdog.progress()  # some worker moved our partitions on
            self._applied = applied
            now = time.monotonic()
            for p in sorted(owned):
                self.delivered.setdefault(p, now)
                quiet = now - self.delivered[p]
                if behind[p] and p in applied and quiet > CATCH_UP_AFTER_S:
                    log.warning(
                        "partition %d: %d records behind and nothing delivered for %.0f s; reading them directly",
                        p, behind[p], quiet,
                    )
                    records = await self.prober.read(p, applied[p], min(end[p], applied[p] + CATCH_UP_MAX) - 1)
                    if records:
                        await self.apply(records)

    def on_assigned(self, assigned: set) -> None:
        now = time.monotonic()
        for tp in assigned:
            if tp.topic == self.topics.events:
                self.delivered[tp.partition] = now  # give Faust time to start delivering


def create_app(settings: WorkerSettings) -> faust.App:
    """The Faust app with its topic, agent, timers, and the worker and watchdog behind them."""
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
        broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.stream_session_timeout_s / 3),
        datadir=str(datadir),
    )
    watchdog = Watchdog("worker", settings.stall_timeout_s, waiting=lambda: worker.waiting)
    worker = Worker(settings, app, watchdog)
    events = app.topic(settings.kafka_topics.events, key_serializer="raw", value_serializer="raw")

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's signal stubs want a sync receiver
    async def on_assigned(app: faust.App, assigned: set, **kwargs: Any) -> None:
        worker.on_assigned(assigned)

    # concurrency=1: Faust can commit an offset past an in-flight event when
    # an agent runs with concurrency > 1.
    @app.agent(events, concurrency=1)
    async def aggregate(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]  # Stream has it, StreamT does not
            await worker.apply([
                Incoming(e.message.partition, int(e.message.timestamp * 1000), e.message.value, e.message.offset)
                for e in batch
            ])

    @app.timer(interval=settings.status_sweep_s)
    async def sweep() -> None:
        await worker.sweep()

    @app.task
    async def probe() -> None:
        await worker.probe()

    app.fleetsight_worker = worker  # type: ignore[attr-defined]
    app.fleetsight_watchdog = watchdog  # type: ignore[attr-defined]
    return app


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> int:
    """Entry point of ``fleetsight worker`` (Faust's own worker command)."""
    asyncio.run(ensure_topics(settings))
    # asyncio.run closed its loop; Faust needs a current one of its own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    watchdog: Watchdog = app.fleetsight_watchdog  # type: ignore[attr-defined]
    metrics.watch(watchdog)
    metrics.serve(settings.worker_metrics_port, settings.metrics_bind)
    watchdog.start(loop)
    # Faust's worker otherwise serves its web UI on 0.0.0.0:6066.
    sys.argv = ["fleetsight-worker", "worker", "--without-web", f"--loglevel={loglevel}"]
    app.main()
    return 0
