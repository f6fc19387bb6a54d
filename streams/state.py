"""The stream worker's state in PostgreSQL: minute buckets, camera state, offsets applied.

Why not Faust tables: their changelog recovery is where failovers hung
(faust-streaming #74 and #155: "No event received for active tp ... since
recovery start" for minutes after a worker was SIGKILLed, seen on main), and
a survivor promoted from a standby came back with short buckets. Here there
is nothing to recover: a worker that takes a partition over reads the
state the last transaction left.

Each batch is applied in one transaction (:meth:`StateStore.batch`): it
locks the offset rows of the batch's partitions, in partition order (two
workers that both believe they own a partition during a rebalance wait for
each other instead of interleaving, and cannot deadlock), reads the state of
the keys the batch touches, and writes back the new state together with the
next offset of each partition. The worker is at-least-once; the seqs kept in
each bucket make the database exactly-once, and the stored offsets are
where a worker given a partition starts and what it commits to the
consumer group (``streams.worker``, ``streams.offsets``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text, and_, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from streams.aggregate import last_minute

metadata = MetaData()

OFFSETS = Table(
    "stream_offsets", metadata,
    Column("app", String(128), primary_key=True, comment="the stream app (Kafka consumer group)"),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, comment="first offset not yet applied; null: none applied yet"),
    Column("stream_time", BigInteger, nullable=False, server_default="0", comment="newest append time applied, ms"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Stream worker state: per partition of the events topic, how far it is applied.",
)

BUCKETS = Table(
    "stream_buckets", metadata,
    Column("app", String(128), primary_key=True),
    Column("key", Text, primary_key=True, comment="camera|table|dims|minute"),
    Column("partition", Integer, nullable=False),
    Column("minute", BigInteger, nullable=False, comment="start of the (last) minute the bucket covers, ms"),
    Column("state", JSONB, nullable=False, comment="running sums and the seqs folded into them"),
    Index("ix_stream_buckets_prune", "app", "partition", "minute"),
    comment="Stream worker state: per-minute sums and their seqs, and hour and day sums, until their last minute is closed.",
)

CAMERAS = Table(
    "stream_cameras", metadata,
    Column("app", String(128), primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("state", JSONB, nullable=False, comment="status, seqs received, open alerts"),
    comment="Stream worker state: per camera, what the status and alert rules need.",
)


# Whole arrays as single parameters (unnest): one statement per batch, and
# far from asyncpg's limit of 32,767 parameters. A multi-row VALUES insert
# through SQLAlchemy took about 230 us per bucket here (compiling and
# preparing a new statement each time); this takes a tenth of that.
_UPSERT_BUCKETS = text("""
    INSERT INTO stream_buckets (app, key, partition, minute, state)
    SELECT :app, k, p, m, s::jsonb
    FROM unnest(CAST(:keys AS text[]), CAST(:partitions AS int[]), CAST(:minutes AS bigint[]), CAST(:states AS text[])) AS u(k, p, m, s)
    ON CONFLICT (app, key) DO UPDATE SET state = excluded.state
""")
_UPSERT_CAMERAS = text("""
    INSERT INTO stream_cameras (app, camera_id, partition, state)
    SELECT :app, c, p, s::jsonb
    FROM unnest(CAST(:ids AS text[]), CAST(:partitions AS int[]), CAST(:states AS text[])) AS u(c, p, s)
    ON CONFLICT (app, camera_id) DO UPDATE SET state = excluded.state
""")


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Recorder(dict):
    """A dict that remembers which keys were written (what to save); closed buckets are deleted in SQL."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.written: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.written.add(key)


class Batch:
    """One open transaction over some partitions; see :meth:`StateStore.batch`."""

    def __init__(self, conn: AsyncConnection, app: str, topic: str, offsets: dict[int, tuple[int | None, int]]) -> None:
        self.conn = conn
        self.app = app
        self.topic = topic
        self.offsets = offsets  # partition -> (next offset, stream time), as locked

    def next_offset(self, partition: int) -> int | None:
        return self.offsets[partition][0]

    def stream_time(self, partition: int) -> int:
        return self.offsets[partition][1]

    async def buckets(self, keys: Iterable[str]) -> Recorder:
        keys = list(keys)
        found = Recorder()
        if keys:
            # One array parameter: an IN list of a big batch's keys would pass
            # asyncpg's limit of 32,767 parameters.
            rows = await self.conn.execute(
                select(BUCKETS.c.key, BUCKETS.c.state)
                .where(and_(BUCKETS.c.app == self.app, BUCKETS.c.key == any_(bindparam("keys", keys, type_=ARRAY(Text)))))
            )
            dict.update(found, {r.key: r.state for r in rows})
        return found

    async def cameras(self, camera_ids: Iterable[str] = (), partitions: Iterable[int] = ()) -> Recorder:
        """The state of the given cameras, or of every camera of ``partitions``."""
        camera_ids, partitions = list(camera_ids), list(partitions)
        found = Recorder()
        if camera_ids or partitions:
            where = (
                CAMERAS.c.camera_id == any_(bindparam("ids", camera_ids, type_=ARRAY(Text))) if camera_ids
                else CAMERAS.c.partition.in_(partitions)
            )
            rows = await self.conn.execute(
                select(CAMERAS.c.camera_id, CAMERAS.c.state).where(and_(CAMERAS.c.app == self.app, where))
            )
            dict.update(found, {r.camera_id: r.state for r in rows})
        return found

    async def save_buckets(self, buckets: Recorder, partition_of: Callable[[str], int]) -> None:
        """Write the buckets that changed (``partition_of(key)`` places each)."""
        keys = sorted(buckets.written)
        if keys:
            await self.conn.execute(_UPSERT_BUCKETS, {
                "app": self.app, "keys": keys, "partitions": [partition_of(k) for k in keys],
                # An hour or day bucket is filed under its last minute: pruned when that closes.
                "minutes": [last_minute(buckets[k]) for k in keys], "states": [_json(buckets[k]) for k in keys],
            })

    async def save_cameras(self, cameras: Recorder, partition_of: Callable[[str], int]) -> None:
        ids = sorted(cameras.written)
        if ids:
            await self.conn.execute(_UPSERT_CAMERAS, {
                "app": self.app, "ids": ids, "partitions": [partition_of(c) for c in ids],
                "states": [_json(cameras[c]) for c in ids],
            })

    async def advance(self, partition: int, next_offset: int | None, stream_time: int) -> None:
        """Record how far ``partition`` is applied (never moves back)."""
        old_next, old_time = self.offsets[partition]
        if next_offset is None or (old_next is not None and next_offset < old_next):
            next_offset = old_next
        stream_time = max(stream_time, old_time)
        if (next_offset, stream_time) == (old_next, old_time):
            return
        await self.conn.execute(
            OFFSETS.update()
            .where(and_(OFFSETS.c.app == self.app, OFFSETS.c.topic == self.topic, OFFSETS.c.partition == partition))
            .values(next_offset=next_offset, stream_time=stream_time, updated_at=func.now())
        )
        self.offsets[partition] = (next_offset, stream_time)

    async def prune(self, partition: int, before_minute: int) -> int:
        """Delete the buckets of ``partition`` that start before ``before_minute``."""
        result = await self.conn.execute(
            BUCKETS.delete().where(and_(BUCKETS.c.app == self.app, BUCKETS.c.partition == partition, BUCKETS.c.minute < before_minute))
        )
        return result.rowcount or 0


class StateStore:
    """The worker's state tables for one stream app and its events topic."""

    def __init__(self, engine: AsyncEngine, app: str, topic: str) -> None:
        self.engine = engine
        self.app = app
        self.topic = topic

    @classmethod
    def connect(cls, dsn: str, app: str, topic: str) -> StateStore:
        # pool_pre_ping: a connection PostgreSQL dropped (a restart) is not handed out.
        # msgspec reads and writes the JSONB states: about 4x json's speed on them.
        engine = create_async_engine(
            dsn, pool_size=2, max_overflow=2, pool_pre_ping=True, json_serializer=_json, json_deserializer=msgspec.json.decode,
        )
        return cls(engine, app, topic)

    @asynccontextmanager
    async def batch(self, partitions: Iterable[int]) -> AsyncIterator[Batch]:
        """A transaction holding the offset rows of ``partitions``; commits on leaving."""
        partitions = sorted(set(partitions))
        async with self.engine.begin() as conn:
            if partitions:
                await conn.execute(
                    pg_insert(OFFSETS)
                    .values([{"app": self.app, "topic": self.topic, "partition": p} for p in partitions])
                    .on_conflict_do_nothing()
                )
            rows = await conn.execute(
                select(OFFSETS.c.partition, OFFSETS.c.next_offset, OFFSETS.c.stream_time)
                .where(and_(OFFSETS.c.app == self.app, OFFSETS.c.topic == self.topic, OFFSETS.c.partition.in_(partitions)))
                .order_by(OFFSETS.c.partition)
                .with_for_update()
            )
            offsets = {r.partition: (r.next_offset, r.stream_time) for r in rows}
            yield Batch(conn, self.app, self.topic, offsets)

    async def applied(self) -> dict[int, int]:
        """Next offset to apply, per partition that has one (no locks)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(OFFSETS.c.partition, OFFSETS.c.next_offset)
                .where(and_(OFFSETS.c.app == self.app, OFFSETS.c.topic == self.topic, OFFSETS.c.next_offset.is_not(None)))
            )
            return {r.partition: r.next_offset for r in rows}
