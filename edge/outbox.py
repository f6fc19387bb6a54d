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
- The ledger (``schemas/ledger.py``) of what was recorded per event-time
  minute, and what of it a full outbox dropped, is kept in the same file and
  updated in the same transaction as the events, so it can never disagree
  with them. A closed minute is reported by a ``reconcile`` event appended
  in the transaction that closes it; a minute that changes after that (an
  event with an old time, a drop) is reported again once its last report
  has left the outbox. Reports wait while the outbox is full: each one
  would drop an event, which changes a minute, which wants a report (a
  test saw 65 reports for 10 minutes that way); the ledger keeps them until
  there is room.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge.events import NewEvent
from schemas.codec import MINUTE_MS, Event
from schemas.ledger import UNCOUNTED, MinuteLedger, seq_hash

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
CREATE TABLE IF NOT EXISTS ledger (
    minute   INTEGER PRIMARY KEY,
    body     TEXT    NOT NULL,            -- the reconcile body (MinuteLedger.report())
    reported INTEGER,                     -- seq of its latest reconcile event (NULL: none yet)
    changed  INTEGER NOT NULL DEFAULT 1   -- 1: the body is newer than that report, or the report was lost
);
-- Every store looks for due minutes and old ones to forget: without this it
-- would read the whole ledger (a week of minutes) each time.
CREATE INDEX IF NOT EXISTS ledger_changed ON ledger(changed, minute);
"""

LEDGER_KEEP_MS = 7 * 24 * 3600 * 1000  # reported minutes older than this are forgotten
REPORTS_PER_APPEND = 500  # a link back after days: the backlog of reports goes out in slices


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

    def append(
        self, items: Iterable[NewEvent], state: str | None = None, close_at: int | None = None, close_all: bool = False
    ) -> list[Event]:
        """Store events in one transaction; returns them with their seqs.

        When this returns, the events are on disk. ``state`` (the scene's
        snapshot) is saved in the same transaction, so the saved state always
        matches the events emitted. If the outbox is over its limit, the
        oldest events are dropped and counted. With ``close_at`` (the node's
        time now, ms), minutes that ended by then are reported (their
        ``reconcile`` events are among those returned); ``close_all`` reports
        the current minute too (the source is over).
        """
        out: list[Event] = []
        ledgers: dict[int, MinuteLedger] = {}
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if state is not None:
                cur.execute("INSERT OR REPLACE INTO state(key, value) VALUES ('scene', ?)", (state,))
            for item in items:
                event = self._insert(cur, item.ts, item.type, item.data)
                out.append(event)
                if event.type not in UNCOUNTED:
                    self._ledger(cur, event.minute, ledgers).record(event.seq, event.type, event.data)
            overflow = self._depth(cur) - self.max_events
            if overflow > 0:
                cutoff = self._head(cur) + overflow
                for seq, ts, type_, data in cur.execute("SELECT seq, ts, type, data FROM events WHERE seq < ?", (cutoff,)).fetchall():
                    if type_ in UNCOUNTED:  # a report lost: send that minute again
                        cur.execute("UPDATE ledger SET changed = 1 WHERE reported = ?", (seq,))
                    elif ledger := self._stored_ledger(cur, ts - ts % MINUTE_MS, ledgers):
                        ledger.drop(seq, type_, json.loads(data))  # (a minute forgotten long ago stays so)
                cur.execute("DELETE FROM events WHERE seq < ?", (cutoff,))
                self._add_meta("dropped", overflow)
            self._save_ledgers(cur, ledgers)
            if close_at is not None:
                out += self._close_minutes(cur, close_at, close_all)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return out

    def _insert(self, cur: sqlite3.Cursor, ts: int, type_: str, data: dict[str, Any]) -> Event:
        text = json.dumps(data, separators=(",", ":"))
        cur.execute("INSERT INTO events(ts, type, data) VALUES (?, ?, ?)", (ts, type_, text))
        seq = cur.lastrowid
        assert seq is not None  # an INSERT always sets it
        return Event(self.camera_id, self.site, seq, ts, type_, data)

    # --- the ledger ---------------------------------------------------------------

    @staticmethod
    def _stored_ledger(cur: sqlite3.Cursor, minute: int, ledgers: dict[int, MinuteLedger]) -> MinuteLedger | None:
        """The minute's ledger as this transaction has it so far (loaded into ``ledgers``); None if there is none."""
        if minute not in ledgers:
            row = cur.execute("SELECT body FROM ledger WHERE minute = ?", (minute,)).fetchone()
            if row is None:
                return None
            ledgers[minute] = MinuteLedger.from_report(json.loads(row[0]))
        return ledgers[minute]

    def _ledger(self, cur: sqlite3.Cursor, minute: int, ledgers: dict[int, MinuteLedger]) -> MinuteLedger:
        """:meth:`_stored_ledger`, or a new one."""
        return self._stored_ledger(cur, minute, ledgers) or ledgers.setdefault(minute, MinuteLedger(minute))

    @staticmethod
    def _save_ledgers(cur: sqlite3.Cursor, ledgers: dict[int, MinuteLedger]) -> None:
        cur.executemany(
            "INSERT INTO ledger(minute, body) VALUES (?, ?) ON CONFLICT(minute) DO UPDATE SET body = excluded.body, changed = 1",
            [(minute, json.dumps(ledger.report(), separators=(",", ":"))) for minute, ledger in ledgers.items()],
        )

    def _close_minutes(self, cur: sqlite3.Cursor, now: int, close_all: bool) -> list[Event]:
        limit = 2**62 if close_all else now  # close_all: every minute, even one ahead of the clock
        # Due: over, changed since its report, that report no longer waiting
        # here, and room for the new one (a report never makes a drop).
        due = cur.execute(
            "SELECT minute, body, reported FROM ledger WHERE changed = 1 AND minute <= ? ORDER BY minute LIMIT ?",
            (limit - MINUTE_MS, REPORTS_PER_APPEND),
        ).fetchall()
        if due:
            head = self._head(cur) or self._last(cur) + 1
            room = self.max_events - self._depth(cur)
            due = [(minute, body) for minute, body, reported in due if reported is None or reported < head][: max(0, room)]
        out = []
        for minute, body in due:
            event = self._insert(cur, now, "reconcile", json.loads(body))
            cur.execute("UPDATE ledger SET reported = ?, changed = 0 WHERE minute = ?", (event.seq, minute))
            out.append(event)
        cur.execute("DELETE FROM ledger WHERE changed = 0 AND minute < ?", (now - LEDGER_KEEP_MS,))
        return out

    def ledger(self, minute: int) -> MinuteLedger | None:
        """What this camera recorded in ``minute`` (None if nothing)."""
        row = self._db.execute("SELECT body FROM ledger WHERE minute = ?", (minute,)).fetchone()
        return MinuteLedger.from_report(json.loads(row[0])) if row else None

    def unreported(self) -> list[int]:
        """Minutes whose current figures have not been sent."""
        return [r[0] for r in self._db.execute("SELECT minute FROM ledger WHERE changed = 1 ORDER BY minute")]

    def load_state(self) -> str | None:
        """The scene snapshot saved by the last :meth:`append` that had one."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'scene'").fetchone()
        return row[0] if row else None

    @staticmethod
    def _head(cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT min(seq) FROM events").fetchone()
        return row[0] if row[0] is not None else 0

    @staticmethod
    def _last(cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return row[0] if row else 0

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
        return self._last(self._db.cursor())

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
            rows = cur.execute("SELECT seq, ts, type, data FROM events ORDER BY seq").fetchall()
            cur.execute("DELETE FROM events")
            cur.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            cur.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('events', ?)", (seq,))
            ledgers: dict[int, MinuteLedger] = {}
            for new, (old, ts, type_, data) in enumerate(rows, start=seq + 1):
                cur.execute("INSERT INTO events(seq, ts, type, data) VALUES (?, ?, ?, ?)", (new, ts, type_, data))
                if type_ in UNCOUNTED:  # its figures name the old seqs: report the minute again
                    cur.execute("UPDATE ledger SET changed = 1, reported = ? WHERE reported = ?", (new, old))
                    continue
                # The ledger recorded the old seq: it is the new one now.
                ledger = self._stored_ledger(cur, ts - ts % MINUTE_MS, ledgers)
                if ledger is None:
                    continue
                ledger.digest ^= seq_hash(old) ^ seq_hash(new)
                ledger.seq_last = max(ledger.seq_last or new, new)
            self._save_ledgers(cur, ledgers)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return len(rows)
