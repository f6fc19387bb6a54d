"""Kafka -> PostgreSQL writer for the aggregate rows.

Reads absolute row values (``schemas.aggregates``) and UPSERTs them in
batches, one transaction per batch; the consumer offset is committed only
after the transaction, so a crash replays records, and a replay changes
nothing: a row only moves to a larger version. The reconciler
(``sinks/reconcile.py``) runs beside it, on the same database.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, TextClause, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeEngine

from runtime.kafka_admin import ensure_topics
from runtime.kafka_client import commit_read, consumer_timeouts, kafka_security, partition_health
from runtime.kafka_offsets import fetched_lag
from runtime.process import run_supervised
from runtime.retry import retry
from runtime.settings import SinkSettings
from runtime.watchdog import Watchdog
from schemas.aggregates import TABLES, Row, TableSpec, decode_rows
from schemas.sites import SiteRule
from sinks import metrics as sink_metrics
from sinks.capacity import CapacityWatch
from sinks.db import make_engine
from sinks.keeper import PartitionKeeper
from sinks.models import MODELS
from sinks.reconcile import Reconciler
from sinks.site_occupancy import SiteRefresh, save_rules

log = logging.getLogger("fleetsight.sink")

HEALTH_CHECK_S = 5.0  # at most this often, ask Kafka what is wrong while rows wait and none come

T = TypeVar("T")


def latest(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Per table, one row per key: the one with the largest version."""
    best: dict[str, Row] = {}
    for row in rows:
        have = best.get(row.key)
        if have is None or row.version >= have.version:
            best[row.key] = row
    tables: dict[str, list[Row]] = defaultdict(list)
    for row in best.values():
        tables[row.table].append(row)
    return tables


def _sql_values(spec: TableSpec, row: Row) -> dict[str, Any]:
    return {
        column: datetime.fromtimestamp(value / 1000, tz=UTC) if column in spec.times and value is not None else value
        for column, value in row.values.items()
    }


def _array_type(kind: TypeEngine[Any]) -> str:
    """The PostgreSQL array a column's values travel in (JSON as text, cast back per element)."""
    if isinstance(kind, Boolean):
        return "boolean[]"
    if isinstance(kind, BigInteger):
        return "bigint[]"
    if isinstance(kind, Integer):
        return "integer[]"
    if isinstance(kind, Float):
        return "float8[]"
    if isinstance(kind, DateTime):
        return "timestamptz[]"
    return "text[]"


@functools.cache
def _upsert_sql(table: str) -> tuple[TextClause, tuple[str, ...]]:
    """One INSERT ... SELECT FROM unnest(arrays) ON CONFLICT per table, and the JSON columns to encode.

    Each column's values are one array parameter: one statement per table
    and batch, prepared once. The multi-row VALUES insert it replaces was
    compiled and prepared anew for every chunk of 500 rows
    (bench/sql_scale.py: about 4,000 rows/s either side of partitioning).
    """
    spec, columns = TABLES[table], MODELS[table].__table__.c
    json_columns = tuple(c for c in spec.columns if isinstance(columns[c].type, JSONB))
    names = ", ".join(spec.columns)
    arrays = ", ".join(f"CAST(:{c} AS {_array_type(columns[c].type)})" for c in spec.columns)
    select = ", ".join(f"{c}::jsonb" if c in json_columns else c for c in spec.columns)
    sql = f"INSERT INTO {table} ({names}) SELECT {select} FROM unnest({arrays}) AS u({names}) ON CONFLICT ({', '.join(spec.key)}) "
    if spec.version is None:
        sql += "DO NOTHING"
    else:
        # A replayed or partial value (older, smaller) never wins.
        sql += (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in spec.values)}, updated_at = now() "
                f"WHERE {table}.{spec.version} < excluded.{spec.version}")
    return text(sql), json_columns


async def upsert(engine: AsyncEngine, rows: Iterable[Row], sites: dict[str, SiteRule] | None = None) -> int:
    """Write absolute row values; a row never moves to a smaller version.

    The site tables follow the doors' crossings in the same transaction
    (``sinks/site_occupancy.py``; ``sites``: each site's day and zone).
    """
    written = 0
    async with engine.begin() as conn:
        tables = latest(rows)
        site_refresh = SiteRefresh(sites or {})
        await site_refresh.read(conn, tables)
        for table, items in sorted(tables.items()):
            spec = items[0].spec
            # In key order: the reconciler locks camera_status rows in the same order.
            items.sort(key=lambda r: tuple(str(r.values[k]) for k in spec.key))  # noqa: B023 (used at once)
            statement, json_columns = _upsert_sql(table)
            values = [_sql_values(spec, r) for r in items]
            arrays: dict[str, list[Any]] = {
                c: [None if v[c] is None else json.dumps(v[c]) for v in values] if c in json_columns else [v[c] for v in values]
                for c in spec.columns
            }
            await conn.execute(statement, arrays)
            written += len(values)
            sink_metrics.SINK_ROWS.labels(table).inc(len(values))
        await _sites(conn, site_refresh)
    return written


# SQLSTATE classes of a failure that passes (the whole batch is tried again):
# connection, transaction rollback (deadlock, serialization), operator
# intervention, resources.
_PASSING = ("08", "40", "53", "57")


async def _sites(conn: AsyncConnection, site_refresh: SiteRefresh) -> None:
    """The site tables after the batch, in a savepoint of its transaction.

    They are derived from the rows just written: a fault of their own that
    would come back every time (a broken site rule, a missing partition)
    must not hold every camera's rows back; it is logged and counted, and
    ``fleetsight audit`` shows the site minutes it left behind.
    """
    try:
        async with conn.begin_nested():
            await site_refresh.write(conn)
    except DBAPIError as exc:
        state = getattr(exc.orig, "sqlstate", None) or ""
        if exc.connection_invalidated or state[:2] in _PASSING:
            raise
        sink_metrics.SINK_SITE_ERRORS.inc()
        log.error("the site tables were not brought up to date for this batch (%s); its rows are written", str(exc.orig).splitlines()[0])


class Sink:
    """Consumes the row topic into the public tables."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self.written = 0
        self.backlog = 0  # row records read or known in Kafka, not yet written
        self._next: dict[Any, int] = {}  # partition -> next offset to read
        self._next_health_check = 0.0
        self.watchdog = Watchdog("sink", settings.stall_timeout_s, waiting=lambda: self.backlog)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await ensure_topics(self.settings)
        engine = make_engine(self.settings.database_url)
        consumer = AIOKafkaConsumer(
            self.settings.kafka_topics.rows,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.kafka_topic_prefix}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **consumer_timeouts(),
            **kafka_security(self.settings),
        )
        await consumer.start()
        log.info("sink: %s -> %s", self.settings.kafka_topics.rows, engine.url.render_as_string(hide_password=True))
        s = self.settings
        reconciler = Reconciler(
            engine, s.reconcile_every_s, s.reconcile_window_s, s.reconcile_grace_s, write_rows=lambda rows: upsert(engine, rows, s.sites)
        )
        reconciling = asyncio.create_task(reconciler.run(self._stop), name="reconcile")
        capacity = CapacityWatch(engine, s.sites, s.capacity_check_s, write_rows=lambda rows: upsert(engine, rows, s.sites))
        watching = asyncio.create_task(capacity.run(self._stop), name="capacity")
        keeper = PartitionKeeper(engine, s)
        try:
            await self._retry(lambda: self._save_rules(engine), "saving the sites' rules")
            while not self._stop.is_set():
                if keeper.due():
                    self.watchdog.busy("making and dropping partitions")
                    await self._retry(keeper.maintain, "partition maintenance")
                self.watchdog.busy("reading row records from Kafka")
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                rows: list[Row] = []
                newest = 0
                for tp, messages in batches.items():
                    self._next[tp] = messages[-1].offset + 1
                    for message in messages:
                        newest = max(newest, message.timestamp)
                        try:
                            rows.extend(decode_rows(message.value))
                        except (ValueError, TypeError, KeyError) as exc:
                            log.error("skipping unreadable row record at %s:%s: %s", message.partition, message.offset, exc)
                self.backlog = self._behind(consumer) + sum(len(m) for m in batches.values())
                if not batches and self.backlog and time.monotonic() >= self._next_health_check:
                    # Rows wait and none came: a fault Kafka reports (a leader gone, copies out of sync,
                    # no answer) is waited out; all well while nothing comes is for the watchdog to judge.
                    self._next_health_check = time.monotonic() + HEALTH_CHECK_S
                    if (problem := await partition_health(consumer, consumer.assignment())) is not None:
                        self.watchdog.fault(f"rows wait and Kafka says {problem}")
                if rows:
                    started = time.perf_counter()
                    self.written += await self._retry(
                        lambda: self._write(engine, keeper, rows),  # noqa: B023 (awaited before the loop moves on)
                        f"writing {len(rows)} rows to the database",
                    )
                    sink_metrics.SINK_WRITE.observe(time.perf_counter() - started)
                    sink_metrics.SINK_LAG.observe(max(0.0, time.time() - newest / 1000))
                if batches:
                    self.watchdog.busy("committing Kafka offsets")
                    await commit_read(consumer, log, self.watchdog)
                    self.watchdog.progress()  # the rows are in SQL either way
                self.backlog = self._behind(consumer)
                sink_metrics.SINK_BACKLOG.set(self.backlog)
        finally:
            self._stop.set()
            await reconciling
            await watching
            await consumer.stop()
            await engine.dispose()

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call`` until the database takes it (the sink never drops rows for an outage)."""
        return await retry(
            call, what=what, errors=(OperationalError, DBAPIError, OSError), log=log, watchdog=self.watchdog,
            stopping=self._stop.is_set, on_retry=sink_metrics.SINK_RETRIES.inc,
        )

    async def _save_rules(self, engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await save_rules(conn, self.settings.sites)

    async def _write(self, engine: AsyncEngine, keeper: PartitionKeeper, rows: list[Row]) -> int:
        return await upsert(engine, await keeper.admit(rows), self.settings.sites)

    def _behind(self, consumer: AIOKafkaConsumer) -> int:
        """Records in the assigned partitions past the last one read (by the last fetch's high watermark)."""
        return fetched_lag(consumer, self._next)


async def run_sink(settings: SinkSettings) -> int:
    """Entry point of ``fleetsight sink``."""
    sink = Sink(settings)
    code = await run_supervised(
        sink.run, sink.stop, sink.watchdog, metrics_port=settings.sink_metrics_port, metrics_bind=settings.metrics_bind,
        log=log, on_failure="sink failed; uncommitted records will be read again",
    )
    if code == 0:
        log.info("sink stopped after writing %d rows", sink.written)
    return code
