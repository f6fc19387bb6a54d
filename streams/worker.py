"""The Faust application: events in, exact aggregates, camera status and alerts out.

Run with ``fleetsight worker``; start more workers to share the partitions.

Faust consumes the events topic, balances its partitions over the workers
and delivers their records in batches; the state the aggregates need lives
in PostgreSQL (``streams/state.py``), one transaction per batch, together
with the next offset of each partition the batch touched. So:

- a partition Faust hands this worker starts at the offset the database
  says comes next (:meth:`Worker.position`), and a worker that
  takes a partition over has nothing to restore;
- the offsets committed to the consumer group are those the database holds,
  committed after its transaction (:meth:`Worker.commit`);
- a record delivered twice is dropped before it is decoded, and one that
  would jump over an offset is held back while Faust is sent back to the
  missing one (``streams/offsets.py``).

A stall watchdog (``runtime/watchdog.py``) exits the process when records
wait and none is applied.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.admin import NewTopic
from faust.exceptions import ProducerSendError
from faust.types import TP
from sqlalchemy.exc import DBAPIError, OperationalError

from runtime import metrics
from runtime.kafka_admin import ensure_topics, replication
from runtime.kafka_client import METADATA_MAX_AGE_MS, REQUEST_TIMEOUT_S, KafkaFault, kafka_security, recoverable
from runtime.kafka_offsets import LogOffsets, behind
from runtime.retry import retry
from runtime.settings import WorkerSettings
from runtime.watchdog import Watchdog
from schemas.aggregates import ALERTS, Row, encode_rows
from schemas.codec import Event
from schemas.deadletter import DeadLetter
from streams import faust_seam
from streams import metrics as stream_metrics
from streams.aggregate import BatchResult, Incoming, MinuteAggregator, bucket_camera
from streams.offsets import applicable
from streams.partitioning import partition_for
from streams.state import Batch, StateStore
from streams.status import AlertConfig, FleetStatus, OccupancyRule

log = logging.getLogger("fleetsight.worker")

BATCH_MAX = 1000
ROWS_PER_RECORD = 500
# A batch is made of what came within this long, up to BATCH_MAX records:
# the longest an event waits for its batch when the load is light. At 0.2 s
# that wait was most of an event's way to SQL (the worker's hop 126 of a
# median 155 ms, p99 286 ms at 200 events/s); at 0.05 s, 42 of 70 ms, p99
# 129-161 ms (issue 37). Under a backlog batches fill long before either.
BATCH_WITHIN_S = 0.05
FETCH_BYTES = 8 * 1024 * 1024  # a partition's fetch (Faust's consumer_max_fetch_size), see create_app
STREAM_BUFFER = 16384  # records Faust buffers for the agent (stream_buffer_maxsize)
PRUNE_EVERY_S = 60.0
PROBE_EVERY_S = 5.0
KAFKA_TIMEOUT_S = REQUEST_TIMEOUT_S
# What a batch (or a sweep) is retried on, rolled back and run again: the
# database away, or Kafka not taking its rows (a leader moving, too few
# in-sync copies, a frozen node timing out) -- not a reason to exit.
DB_ERRORS = (OperationalError, DBAPIError, OSError, asyncio.TimeoutError, KafkaFault)


def stage_time(stage: str, since: float | None, now: float | None = None) -> float:
    """Add the time from ``since`` to now to ``stage`` (``fleetsight_worker_stage_seconds``); now."""
    now = time.perf_counter() if now is None else now
    if since is not None:
        stream_metrics.WORKER_STAGE.labels(stage).inc(now - since)
    return now


def alert_config(settings: WorkerSettings) -> AlertConfig:
    return AlertConfig(
        offline_after_s=settings.offline_after_s,
        clear_after_s=settings.alert_clear_s,
        backlog_min=settings.backlog_alert_min,
        backlog_reports=settings.backlog_alert_reports,
        occupancy=tuple(OccupancyRule(**rule) for rule in settings.occupancy_alerts),
        clock_skew_s=settings.clock_skew_alert_s,
        missed_share=settings.missed_frames_alert_share,
        crowding_share=settings.crowding_alert_share,
    )


class Worker:
    """Applies batches of event records to the state in PostgreSQL and sends the rows out.

    One batch at a time per process (``lock``): the agent's batches and the
    status sweep change the same state.
    """

    def __init__(self, settings: WorkerSettings, app: faust.App, watchdog: Watchdog) -> None:
        self.settings = settings
        self.app = app
        self.watchdog = watchdog
        self.topics = settings.kafka_topics
        self.partitions = settings.kafka_partitions
        self.store = StateStore.connect(settings.database_url, settings.stream_app_id, self.topics.events)
        retention_s = settings.shortest_retention_s
        self.aggregator = MinuteAggregator(
            int(settings.late_after_s * 1000), self.topics.events, int(retention_s * 1000) if retention_s else None,
        )
        self.status = FleetStatus(alert_config(settings), clock=lambda: int(time.time() * 1000))
        # The log's ends, read outside the group: Faust's own view of the log is
        # only as fresh as its last fetch, which is what stops when the worker is stuck.
        self.log = LogOffsets(settings)
        self.lock = asyncio.Lock()
        self.waiting = 0  # records in the log not yet applied, in this worker's partitions
        self._pruned: dict[int, float] = {}
        self._applied: dict[int, int] = {}
        self._done_at: float | None = None  # when the last batch was done (perf_counter)
        self.rows_out = app.topic(self.topics.rows, key_serializer="raw", value_serializer="raw")
        self.alerts_out = app.topic(self.topics.alerts, key_serializer="raw", value_serializer="raw")
        self.deadletter = app.topic(self.topics.deadletter, key_serializer="raw", value_serializer="raw")

    def partition_of(self, key_or_camera: str) -> int:
        return partition_for(bucket_camera(key_or_camera), self.partitions)

    def owned(self) -> set[int]:
        return {tp.partition for tp in faust_seam.assigned_actives(self.app) if tp.topic == self.topics.events}

    # --- partitions handed over -------------------------------------------------------

    async def position(self) -> None:
        """Start each assigned partition of the events topic at the offset the database says comes next.

        Runs on Faust's ``on_rebalance_complete`` signal, which its recovery
        sends and awaits just before it seeks every assigned partition to
        the group's committed offset (``Consumer.perform_seek``), so the
        database's offsets are committed to the group here and that seek
        lands on them. (Done on ``on_partitions_assigned`` instead, the
        recovery ran beside it: once in seven runs of the skipped-offsets
        test it seeked to the group's old offset after this had seeked, and
        Faust dropped the records below it for good.) A partition nothing
        of which was ever applied starts at the log's start (offset 0 is
        before it; the consumer resets to the earliest offset).
        """
        tps = sorted((tp for tp in self.app.consumer.assignment() if tp.topic == self.topics.events), key=lambda tp: tp.partition)
        if not tps:
            return
        self.watchdog.busy("reading the applied offsets of the assigned partitions")
        applied = await retry(
            self.store.applied, what="reading the applied offsets", errors=DB_ERRORS, log=log, watchdog=self.watchdog,
        )
        offsets = {tp.partition: applied.get(tp.partition, 0) for tp in tps}
        committed = await self.commit(offsets)
        log.info(
            "positioned %s at the offsets the database says come next%s",
            ", ".join(f"{p}@{offset}" for p, offset in offsets.items()),
            "" if committed else " (the commit was refused: a rebalance under way)",
        )
        self.watchdog.progress("waiting for records")

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit ``offsets`` (partition -> next offset) of the events topic to the consumer group.

        The events topic is consumed with Faust's acks off, so Faust never
        commits it itself: its bookkeeping of acked offsets, which a seek
        leaves stale, once held the group's commits back for good after a
        rebalance (2 records every 2.8 s, seen with two workers). These are
        the offsets the database holds, committed after its transaction
        (``streams.faust_seam.commit``: Faust's own ``commit()`` takes no
        offsets). Only partitions still assigned are committed; a commit a
        rebalance refused is skipped, not a crash.
        """
        return await faust_seam.commit(self.app, {TP(self.topics.events, p): offset for p, offset in offsets.items()})

    # --- a batch ---------------------------------------------------------------------

    async def apply(self, records: list[Incoming]) -> None:
        """Apply ``records`` (from any partitions) in one transaction; retried while the database is away."""
        started = time.perf_counter()
        stage_time("waiting", self._done_at, started)
        async with self.lock:
            result, applied = await retry(
                lambda: self._apply(records), what=f"applying {len(records)} records to the database",
                errors=DB_ERRORS, log=log, watchdog=self.watchdog,
            )
        self.watchdog.progress("waiting for records")
        committing = time.perf_counter()
        await self.commit(applied)
        self._observe(records, result, started)
        self._done_at = stage_time("commit", committing)

    async def _apply(self, records: list[Incoming]) -> tuple[BatchResult, dict[int, int]]:
        """The batch's result, and the next offset of each partition it touched, as committed."""
        partitions = sorted({r.partition for r in records})
        self.watchdog.busy(f"locking the state of partitions {partitions}")
        at = time.perf_counter()
        async with self.store.batch(partitions) as tx:
            at = stage_time("lock state", at)
            fresh: list[Incoming] = []
            next_offsets: dict[int, int | None] = {}
            for p in partitions:
                mine = {r.offset: r for r in records if r.partition == p}
                run = applicable(tx.next_offset(p), list(mine))
                fresh += [mine[o] for o in run.offsets]
                next_offsets[p] = run.next_offset
                if run.missing_from is not None:
                    await self._resume_at(p, run.missing_from, run.held)
            decoded = self.aggregator.read(fresh)
            at = stage_time("decode", at)
            self.watchdog.busy("reading state from the database")
            buckets = await tx.buckets(MinuteAggregator.keys(decoded))
            cameras = await tx.cameras({e.camera_id for d in decoded for e in d.items if isinstance(e, Event)})
            at = stage_time("read state", at)
            result = self.aggregator.apply(decoded, buckets)
            at = stage_time("fold", at)
            rows = list(result.rows.values()) + self.status.observe(cameras, result.events, result.late)
            at = stage_time("status", at)
            # Absolute values of every row this batch touched, duplicates
            # included: a replayed batch sends them again, so the sink gets
            # them even if a crash came between this send and the commit.
            # Sent before the commit: a batch whose state is saved has its
            # rows in Kafka.
            await self.emit(rows, result.dead)
            at = stage_time("send rows", at)
            self.watchdog.busy("writing state to the database")
            await tx.save_buckets(buckets, self.partition_of)
            await tx.save_cameras(cameras, self.partition_of)
            for p in partitions:
                await tx.advance(p, next_offsets[p], self.aggregator.stream_time.get(p, 0))
                await self._prune(tx, p)
            at = stage_time("write state", at)
            self.watchdog.busy("committing")
        stage_time("commit state", at)
        if result.dead or result.duplicates:
            log.info(
                "batch of %d: %d applied, %d duplicates dropped, %d dead-lettered",
                len(decoded), result.applied, result.duplicates, len(result.dead),
            )
        return result, {p: o for p, o in next_offsets.items() if o is not None}

    async def _resume_at(self, partition: int, offset: int, held: int) -> None:
        """Send Faust back to ``offset`` of ``partition``: records after it came first."""
        log.warning(
            "partition %d: offset %d not delivered but later ones were; %d held back, reading again from %d",
            partition, offset, held, offset,
        )
        stream_metrics.WORKER_OFFSET_JUMPS.inc()
        await self.app.consumer.seek(TP(self.topics.events, partition), offset)

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
        try:
            await self._emit(rows, dead)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, ProducerSendError) else exc
            if cause is not None and recoverable(cause):
                raise KafkaFault(f"sending rows to Kafka: {type(cause).__name__}: {cause}") from exc
            raise

    async def _emit(self, rows: list[Row], dead: list[DeadLetter]) -> None:
        sent = [
            await self.rows_out.send(value=encode_rows(rows[start : start + ROWS_PER_RECORD]))
            for start in range(0, len(rows), ROWS_PER_RECORD)
        ]
        sent += [
            await self.alerts_out.send(key=str(row.values["alert_id"]).encode(), value=row.to_record())
            for row in rows if row.table == ALERTS.name
        ]
        sent += [
            await self.deadletter.send(key=(letter.camera_id or "").encode() or None, value=letter.to_record())
            for letter in dead
        ]
        await asyncio.gather(*sent)  # each send's delivery (acks=all)

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
            for state in ("online", "offline"):
                stream_metrics.WORKER_CAMERAS.labels(state).set(0)  # another worker counts them now
            return

        async def go() -> None:
            async with self.store.batch(owned) as tx:
                cameras = await tx.cameras(partitions=owned)
                rows = self.status.sweep(cameras, lambda camera: self.partition_of(camera) in owned)
                mine = [s for c, s in cameras.items() if s and self.partition_of(c) in owned]
                online = sum(1 for s in mine if s["online"])
                stream_metrics.WORKER_CAMERAS.labels("online").set(online)
                stream_metrics.WORKER_CAMERAS.labels("offline").set(len(mine) - online)
                if rows:
                    await self.emit(rows, [])
                    await tx.save_cameras(cameras, self.partition_of)

        async with self.lock:
            await retry(go, what="status sweep", errors=DB_ERRORS, log=log, watchdog=self.watchdog)
            self.watchdog.busy("waiting for records")

    async def probe(self) -> None:
        """Every few seconds: how many records wait in this worker's partitions, and whether any moved."""
        everything = list(range(self.partitions))
        while True:
            await asyncio.sleep(PROBE_EVERY_S)  # the probe's period
            try:
                first = await self.log.firsts(self.topics.events, everything)
                end = await self.log.ends(self.topics.events, everything)
            except Exception as exc:  # noqa: BLE001 - a failed probe is retried; the watchdog judges
                log.warning("lag probe: Kafka did not answer (%s: %s)", exc.__class__.__name__, exc)
                # Faust's fetches wait on the same Kafka: records waiting now is not a hang.
                self.watchdog.fault(f"Kafka does not answer the lag probe ({exc.__class__.__name__})")
                continue
            try:
                applied = await asyncio.wait_for(self.store.applied(), KAFKA_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                # Judge against what was applied when the database last
                # answered: new records then count as waiting.
                log.warning("lag probe: the database did not answer (%s: %s)", exc.__class__.__name__, exc)
                applied = self._applied
            mine = self.owned() or set(everything)  # nothing assigned (a rebalance): the group as a whole
            self.waiting = behind({p: end[p] for p in mine}, applied, first)
            if any(applied.get(p) != self._applied.get(p) for p in mine):
                self.watchdog.progress()  # some worker moved our partitions on
            elif self.waiting and (problem := await self.log.trouble(self.topics.events, mine)) is not None:
                self.watchdog.fault(f"records wait and Kafka says {problem}")
            self._applied = applied


@dataclass(frozen=True)
class StreamApp:
    """The Faust app and what runs behind its agent, timer and task."""

    app: faust.App
    worker: Worker
    watchdog: Watchdog


def create_app(settings: WorkerSettings, brokers: int = 1) -> StreamApp:
    """The Faust app with its topic, agent, timers, and the worker and watchdog behind them."""
    datadir = settings.services_dir / "streams" / settings.stream_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.stream_app_id,
        broker=";".join(f"kafka://{address.strip()}" for address in settings.kafka_bootstrap.split(",")),
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=replication(brokers)[0],
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.stream_session_timeout_s / 3),
        # Faust's defaults wait 90 s on a consumer request and 1,200 s on a
        # produce request: with a broker frozen (not dead) every fetch, commit
        # and row send to it waited that long (issue 35). The client
        # timeouts of every process (runtime.kafka_client); Faust wants the
        # request timeout no shorter than the session.
        broker_request_timeout=max(REQUEST_TIMEOUT_S, settings.stream_session_timeout_s),
        producer_request_timeout=REQUEST_TIMEOUT_S,
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        producer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        datadir=str(datadir),
        broker_credentials=faust_credentials(settings),
        # Faust fetched 1 MB a partition and buffered 4,096 records: a
        # backlog then came in batches of 300-900 records after waiting the
        # whole BATCH_WITHIN_S for more. With these, full batches follow each
        # other (measured: one worker 48,000 -> 109,000 events/s).
        consumer_max_fetch_size=FETCH_BYTES,
        stream_buffer_maxsize=STREAM_BUFFER,
    )
    watchdog = Watchdog("worker", settings.stall_timeout_s, waiting=lambda: worker.waiting)
    worker = Worker(settings, app, watchdog)
    # acks=False: Faust neither commits this topic's offsets nor counts jumps
    # in it; the worker commits what the database holds (Worker.commit).
    events = app.topic(settings.kafka_topics.events, key_serializer="raw", value_serializer="raw", acks=False)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode's signal stubs want a sync receiver
    async def on_rebalance_complete(app: faust.App, **kwargs: Any) -> None:
        await worker.position()

    # concurrency=1: Faust can commit an offset past an in-flight event when
    # an agent runs with concurrency > 1.
    @app.agent(events, concurrency=1)
    async def aggregate(stream: faust.StreamT) -> None:
        async for batch in faust_seam.take_events(stream, BATCH_MAX, within=BATCH_WITHIN_S):
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

    return StreamApp(app, worker, watchdog)


def faust_credentials(settings: WorkerSettings) -> faust.SASLCredentials | None:
    """The process's Kafka login (``runtime.kafka_client``) as Faust takes it."""
    security = kafka_security(settings)
    if not security:
        return None
    return faust.SASLCredentials(
        username=security["sasl_plain_username"], password=security["sasl_plain_password"],
        ssl_context=security["ssl_context"], mechanism=security["sasl_mechanism"],
    )


def faust_topics(app_id: str) -> Callable[[int], list[NewTopic]]:
    """Faust's own topic, made by us: Faust 0.15 declares ``<id>-__assignor-__leader``
    with one replica whatever the cluster (faust-streaming #449)."""
    def specs(brokers: int) -> list[NewTopic]:
        rf, configs = replication(brokers)
        return [NewTopic(f"{app_id}-__assignor-__leader", 1, rf, topic_configs=configs)]
    return specs


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> int:
    """Entry point of ``fleetsight worker``: Faust's worker, started from code."""
    brokers = asyncio.run(ensure_topics(settings, extra=faust_topics(settings.stream_app_id)))
    # asyncio.run closed its loop; Faust needs a current one of its own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stream = create_app(settings, brokers)
    metrics.watch(stream.watchdog)
    metrics.serve(settings.worker_metrics_port, settings.metrics_bind)
    stream.watchdog.start(loop)
    # A batch makes some hundred thousand short-lived objects; with the
    # default thresholds the collector ran over the long-lived heap (Faust,
    # SQLAlchemy) again and again: building a batch's folds took 5.6 us an
    # event with them, 2.8 us with these. What exists now is never collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # Faust's Worker, not its command line: the `worker` command turns the
    # web server on (0.0.0.0:6066) whatever the app says; this keeps it off.
    faust.Worker(stream.app, loglevel=loglevel, loop=loop).execute_from_commandline()
    return 0
