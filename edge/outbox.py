"""Durable per-camera outbox in SQLite: events wait here until the cloud confirms.

- ``seq`` is the row id of an ``AUTOINCREMENT`` table, allocated in the same
  transaction as the insert, so a crash can never hand out a seq twice
  (SQLite keeps the high-water mark in ``sqlite_sequence`` even after the
  rows are deleted).
- WAL with ``synchronous=FULL``: a committed append survives SIGKILL and
  power loss.
- Rows are only removed from the front: up to the ack watermark the bridge
  publishes, or the oldest ones when the outbox is full (counted in
  ``dropped``). So the rows are always one contiguous seq range.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.codec import Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    ts   INTEGER NOT NULL,
    type TEXT    NOT NULL,
    data TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS confirmed (
    seq  INTEGER PRIMARY KEY,
    ts   INTEGER NOT NULL,
    type TEXT    NOT NULL,
    data TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class NewEvent:
    """An event before it has a seq."""

    ts: int
    type: str
    data: dict[str, Any]


class Outbox:
    """The outbox of one camera; use from one thread."""

    def __init__(
        self, path: Path | str, camera_id: str, site: str, max_events: int = 1_000_000, keep_confirmed: bool = False
    ) -> None:
        self.path = Path(path)
        # Keep a local copy of what the cloud confirmed (audits, ground truth).
        self.keep_confirmed = keep_confirmed
        self.camera_id = camera_id
        self.site = site
        self.max_events = max_events
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The camera loop and the uplink each hold a connection to the file.
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _add_meta(self, key: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, delta),
        )

    def append(self, items: Iterable[NewEvent], state: str | None = None) -> list[Event]:
        """Store events in one transaction; returns them with their seqs.

        When this returns, the events are on disk. ``state`` (the scene's
        snapshot) is saved in the same transaction, so the saved state always
        matches the events emitted. If the outbox is over its limit, the
        oldest events are dropped and counted.
        """
        out: list[Event] = []
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if state is not None:
                cur.execute("INSERT OR REPLACE INTO state(key, value) VALUES ('scene', ?)", (state,))
            for item in items:
                data = json.dumps(item.data, separators=(",", ":"))
                cur.execute("INSERT INTO events(ts, type, data) VALUES (?, ?, ?)", (item.ts, item.type, data))
                seq = cur.lastrowid
                assert seq is not None  # an INSERT always sets it
                out.append(Event(self.camera_id, self.site, seq, item.ts, item.type, item.data))
            overflow = self._depth(cur) - self.max_events
            if overflow > 0:
                head = self._head(cur)
                cur.execute("DELETE FROM events WHERE seq < ?", (head + overflow,))
                self._add_meta("dropped", overflow)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return out

    def load_state(self) -> str | None:
        """The scene snapshot saved by the last :meth:`append` that had one."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'scene'").fetchone()
        return row[0] if row else None

    @staticmethod
    def _head(cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT min(seq) FROM events").fetchone()
        return row[0] if row[0] is not None else 0

    @staticmethod
    def _depth(cur: sqlite3.Cursor) -> int:
        first, last = cur.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        return 0 if first is None else last - first + 1

    def read(self, from_seq: int, limit: int) -> list[Event]:
        """Events with seq >= ``from_seq``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, ts, type, data FROM events WHERE seq >= ? ORDER BY seq LIMIT ?", (from_seq, limit)
        ).fetchall()
        return [Event(self.camera_id, self.site, seq, ts, type_, json.loads(data)) for seq, ts, type_, data in rows]

    def confirm(self, watermark: int) -> int:
        """Delete everything up to ``watermark``; returns how many rows went."""
        if not self.keep_confirmed:
            return self._db.execute("DELETE FROM events WHERE seq <= ?", (watermark,)).rowcount
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("INSERT OR IGNORE INTO confirmed SELECT * FROM events WHERE seq <= ?", (watermark,))
            gone = cur.execute("DELETE FROM events WHERE seq <= ?", (watermark,)).rowcount
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return gone

    def all_events(self) -> list[Event]:
        """Every event this outbox still holds or kept after confirmation, by seq."""
        rows = self._db.execute(
            "SELECT seq, ts, type, data FROM confirmed UNION ALL SELECT seq, ts, type, data FROM events ORDER BY seq"
        ).fetchall()
        return [Event(self.camera_id, self.site, seq, ts, type_, json.loads(data)) for seq, ts, type_, data in rows]

    def last_seq(self) -> int:
        """The highest seq ever allocated (0 for a new outbox)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return row[0] if row else 0

    def head(self) -> int:
        """The oldest seq still held; ``last_seq() + 1`` when empty."""
        row = self._db.execute("SELECT min(seq) FROM events").fetchone()
        return row[0] if row[0] is not None else self.last_seq() + 1

    def depth(self) -> int:
        return self._depth(self._db.cursor())

    def oldest_age_s(self, now_ms: int | None = None) -> float:
        """Age of the oldest waiting event, by its event time."""
        row = self._db.execute("SELECT ts FROM events ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return 0.0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now_ms - row[0]) / 1000)

    @property
    def dropped(self) -> int:
        """Events dropped because the outbox was full, ever."""
        return self._meta("dropped")

    def renumber_after(self, seq: int) -> int:
        """Give every held event, and every future one, a seq above ``seq``.

        For when the cloud has confirmed seqs this outbox never allocated (its
        file was lost or replaced): events reusing those seqs would be taken
        for duplicates of the old ones. Returns how many events moved.
        """
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rows = cur.execute("SELECT ts, type, data FROM events ORDER BY seq").fetchall()
            cur.execute("DELETE FROM events")
            cur.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            cur.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('events', ?)", (seq,))
            cur.executemany("INSERT INTO events(ts, type, data) VALUES (?, ?, ?)", rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return len(rows)
