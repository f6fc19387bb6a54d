"""Kafka -> PostgreSQL writer for the aggregate topics.

Reads absolute aggregate values and UPSERTs them in batches; the consumer
offset is committed only after the rows are committed, so a crash replays
records, and a replay changes nothing: a row only moves to a larger count.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime, timezone
from typing import Iterable

from aiokafka import AIOKafkaConsumer
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from fleetsight.kafka_admin import ensure_topics
from fleetsight.settings import Settings
from schemas.aggregates import MinuteCount
from sinks.db import make_engine
from sinks.models import CameraMinuteCount

log = logging.getLogger("fleetsight.sink")

CHUNK = 1000


def latest(records: Iterable[MinuteCount]) -> list[MinuteCount]:
    """One row per bucket: the largest count seen in this batch."""
    best: dict[str, MinuteCount] = {}
    for record in records:
        have = best.get(record.key)
        if have is None or record.count > have.count:
            best[record.key] = record
    return list(best.values())


async def upsert_minute_counts(engine: AsyncEngine, records: Iterable[MinuteCount]) -> int:
    """Write absolute counts; a row never moves to a smaller count."""
    rows = [
        {
            "camera_id": r.camera_id,
            "object_class": r.object_class,
            "minute": datetime.fromtimestamp(r.minute / 1000, tz=timezone.utc),
            "site": r.site,
            "count": r.count,
        }
        for r in latest(records)
    ]
    async with engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            stmt = pg_insert(CameraMinuteCount).values(rows[start : start + CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=[CameraMinuteCount.camera_id, CameraMinuteCount.object_class, CameraMinuteCount.minute],
                set_={"count": stmt.excluded.count, "site": stmt.excluded.site, "updated_at": func.now()},
                # A replayed or partial value (older, smaller) never wins.
                where=CameraMinuteCount.count < stmt.excluded.count,
            )
            await conn.execute(stmt)
    return len(rows)


class Sink:
    """Consumes the minute-count topic into ``camera_minute_counts``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self.written = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await ensure_topics(self.settings)
        engine = make_engine(self.settings.database_url)
        consumer = AIOKafkaConsumer(
            self.settings.kafka_topics.minute_counts,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.kafka_topic_prefix}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        log.info("sink: %s -> %s", self.settings.kafka_topics.minute_counts, engine.url.render_as_string(hide_password=True))
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                records: list[MinuteCount] = []
                for messages in batches.values():
                    for message in messages:
                        try:
                            records.append(MinuteCount.from_record(message.value))
                        except (ValueError, TypeError) as exc:
                            log.error("skipping unreadable aggregate record at %s:%s: %s", message.partition, message.offset, exc)
                if records:
                    self.written += await self._write_with_retry(engine, records)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await engine.dispose()

    async def _write_with_retry(self, engine: AsyncEngine, records: list[MinuteCount]) -> int:
        delay = 0.5
        while True:
            try:
                return await upsert_minute_counts(engine, records)
            except (OperationalError, DBAPIError, OSError) as exc:
                if self._stop.is_set():
                    raise
                log.warning("database write failed (%s); retrying in %.1f s", exc.__class__.__name__, delay)
                await asyncio.sleep(delay)  # backoff while PostgreSQL is away
                delay = min(delay * 2, 10.0)


async def run_sink(settings: Settings) -> int:
    """Entry point of ``fleetsight sink``."""
    sink = Sink(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.stop)
    try:
        await sink.run()
    except Exception:
        log.exception("sink failed; uncommitted records will be read again")
        return 1
    log.info("sink stopped after writing %d rows", sink.written)
    return 0
