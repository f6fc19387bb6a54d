"""Reconciliation: does SQL hold, per camera and minute, what the camera recorded?

The camera's side is its ledger (``camera_minute_ledger``, from its
``reconcile`` events); the cloud's side is read from the public tables
themselves (``camera_minute_events`` and the per-minute aggregates), so a row
lost or changed anywhere between the edge and SQL shows, not only one lost
before the stream worker. Both sides name SQL cells the same way
(``schemas/ledger.py``). :func:`judge` is the pure verdict; :func:`check`
reads what it needs; :class:`Reconciler` runs in the sink, writes
``camera_minute_reconciliation``, ``camera_status.last_matched_minute`` and
a ``reconcile`` alert per camera with a mismatched minute; ``fleetsight
audit`` runs :func:`check` on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.waiting import every
from schemas.aggregates import ALERTS, ROLLUP_TABLES, Rollup, Row
from schemas.ledger import MinuteLedger, add_totals, digest_hex
from sinks import rollups
from sinks.partitions import existing

log = logging.getLogger("fleetsight.reconcile")

MATCH, PENDING, MISMATCH, EDGE_DROPPED = "match", "pending", "mismatch", "edge_dropped"


@dataclass
class CloudMinute:
    """What SQL holds for one camera-minute."""

    site: str = ""
    events: int = 0
    seq_first: int | None = None
    seq_last: int | None = None
    seq_digest: str = digest_hex(0)
    totals: dict[str, int] = field(default_factory=dict)


@dataclass
class Check:
    """Both sides of one camera-minute, and when either last changed (ms)."""

    camera_id: str
    minute: int
    ledger: MinuteLedger | None
    cloud: CloudMinute
    changed_at: int
    clock_suspect: bool = False


@dataclass(frozen=True)
class Verdict:
    camera_id: str
    minute: int
    site: str
    state: str
    differences: dict[str, Any]
    edge_events: int | None
    cloud_events: int
    dropped: int
    clock_suspect: bool


def judge(check: Check, now_ms: int, grace_ms: int) -> Verdict:
    """The state of one camera-minute (see ``camera_minute_reconciliation.state``)."""
    ledger, cloud = check.ledger, check.cloud
    differences: dict[str, Any] = {}
    if ledger is None:
        state = PENDING  # an older node, or its report is on its way
    else:
        events, digest, totals = ledger.expected()
        if events != cloud.events:
            differences["events"] = {"edge": events, "cloud": cloud.events}
        if digest_hex(digest) != cloud.seq_digest:
            differences["seq_digest"] = {"edge": digest_hex(digest), "cloud": cloud.seq_digest}
        for key in sorted(set(totals) | set(cloud.totals)):
            if totals.get(key, 0) != cloud.totals.get(key, 0):
                differences[key] = {"edge": totals.get(key, 0), "cloud": cloud.totals.get(key, 0)}
        if differences:
            differences["seqs"] = {"edge": [ledger.seq_first, ledger.seq_last], "cloud": [cloud.seq_first, cloud.seq_last]}
            state = PENDING if now_ms - check.changed_at < grace_ms else MISMATCH
        else:
            state = EDGE_DROPPED if ledger.dropped else MATCH
    return Verdict(
        check.camera_id, check.minute, cloud.site, state, differences,
        ledger.events if ledger else None, cloud.events, ledger.dropped if ledger else 0, check.clock_suspect,
    )


# --- reading both sides -------------------------------------------------------------

_CANDIDATES = """
    WITH cand AS (
        SELECT camera_id, minute FROM camera_minute_ledger
        WHERE (minute >= :since OR updated_at >= :since) AND (CAST(:camera AS text) IS NULL OR camera_id = :camera)
        UNION
        SELECT camera_id, minute FROM camera_minute_events
        WHERE (minute >= :since OR updated_at >= :since) AND (CAST(:camera AS text) IS NULL OR camera_id = :camera)
    )
"""
_SIDES = text(_CANDIDATES + """
    SELECT c.camera_id, c.minute, coalesce(l.site, e.site) AS site,
           l.events AS l_events, l.seq_first AS l_first, l.seq_last AS l_last, l.seq_digest AS l_digest, l.totals,
           l.dropped, l.dropped_digest, l.dropped_totals,
           e.events AS e_events, e.seq_first AS e_first, e.seq_last AS e_last, e.seq_digest AS e_digest,
           greatest(l.updated_at, e.updated_at) AS changed_at,
           EXISTS (SELECT 1 FROM alerts a WHERE a.camera_id = c.camera_id AND a.kind = 'clock_skew'
                   AND a.opened_at < c.minute + interval '1 minute' AND coalesce(a.closed_at, 'infinity') >= c.minute) AS clock_suspect
    FROM cand c
    LEFT JOIN camera_minute_ledger l USING (camera_id, minute)
    LEFT JOIN camera_minute_events e USING (camera_id, minute)
""")
# Every SQL cell a ledger names (schemas.ledger.contribution), per camera-minute.
_CELLS = text(_CANDIDATES + """
    SELECT camera_id, minute, 'objects|' || object_class AS k, objects AS n FROM camera_minute_counts JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, 'tracks_ended|' || object_class, tracks_ended FROM camera_minute_counts JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, concat_ws('|', 'crossings_in', geometry, line, object_class), crossings_in
    FROM line_minute_crossings JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, concat_ws('|', 'crossings_out', geometry, line, object_class), crossings_out
    FROM line_minute_crossings JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, concat_ws('|', 'entries', geometry, zone, object_class), entries FROM zone_minute_stats JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, concat_ws('|', 'exits', geometry, zone, object_class), exits FROM zone_minute_stats JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, concat_ws('|', 'occupancy', geometry, zone, object_class), occupancy_samples
    FROM zone_minute_stats JOIN cand USING (camera_id, minute)
    UNION ALL
    SELECT camera_id, minute, 'health', reports FROM camera_minute_health JOIN cand USING (camera_id, minute)
""")


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def check(conn: AsyncConnection, since_ms: int, camera: str | None = None) -> list[Check]:
    """Both sides of every camera-minute from ``since_ms`` on, or changed since then."""
    params = {"since": datetime.fromtimestamp(since_ms / 1000, tz=UTC), "camera": camera}
    checks: dict[tuple[str, int], Check] = {}
    for r in await conn.execute(_SIDES, params):
        ledger = None
        if r.l_events is not None:
            ledger = MinuteLedger.from_report({
                "minute": _ms(r.minute), "events": r.l_events, "seq_first": r.l_first, "seq_last": r.l_last,
                "seq_digest": r.l_digest, "totals": _json(r.totals), "dropped": r.dropped,
                "dropped_digest": r.dropped_digest, "dropped_totals": _json(r.dropped_totals),
            })
        cloud = CloudMinute(site=r.site, events=r.e_events or 0, seq_first=r.e_first, seq_last=r.e_last, seq_digest=r.e_digest or digest_hex(0))
        checks[(r.camera_id, _ms(r.minute))] = Check(r.camera_id, _ms(r.minute), ledger, cloud, _ms(r.changed_at), r.clock_suspect)
    for r in await conn.execute(_CELLS, params):
        found = checks.get((r.camera_id, _ms(r.minute)))
        if found is not None and r.n:
            add_totals(found.cloud.totals, {r.k: r.n})
    return sorted(checks.values(), key=lambda c: (c.camera_id, c.minute))


# --- the hour and day rollups against their minutes -----------------------------------

@dataclass(frozen=True)
class RollupCheck:
    """One row of an hour table that differs from the sums of its minutes, or of a day table from its hours."""

    table: str
    camera_id: str
    site: str
    period: int  # start, ms
    key: str  # the key columns between camera and period, joined by |
    differences: dict[str, Any]
    changed_at: int  # the newest updated_at of the row and its minutes, ms


def _rollup_sql(rollup: Rollup) -> str:
    # A day against its hours (at most 24 rows a key, not 1,440 minutes: the
    # reconciler runs this every pass), an hour against its minutes.
    source, time_column = rollups.source_of(rollup)
    dims = rollups.dims(rollup)
    on = " AND ".join(f"m.{k} = r.{k}" for k in ("camera_id", *dims)) + f" AND m.t = r.{rollup.column}"
    columns = rollups.exact_columns(rollup)
    aggregated = ", ".join(f"{how}({c}) AS {c}" for c, how in columns)
    key = f"concat_ws('|', {', '.join(f'coalesce(m.{k}, r.{k})' for k in dims)})" if dims else "''"
    differs = " OR ".join(f"m.{c} IS DISTINCT FROM r.{c}" for c, _ in columns)
    return f"""
        WITH m AS (
            SELECT {", ".join(["camera_id", *dims])}, date_trunc('{rollup.column}', {time_column}, 'UTC') AS t, max(site) AS site,
                   {aggregated}, max(updated_at) AS changed
            FROM {source}
            WHERE {time_column} >= :since AND {time_column} < :until AND (CAST(:camera AS text) IS NULL OR camera_id = :camera)
            GROUP BY {", ".join(["camera_id", *dims])}, t
        ), r AS (
            SELECT * FROM {rollup.spec.name}
            WHERE {rollup.column} >= :since AND {rollup.column} < :until AND (CAST(:camera AS text) IS NULL OR camera_id = :camera)
        )
        SELECT coalesce(m.camera_id, r.camera_id) AS camera_id, coalesce(m.site, r.site) AS site,
               coalesce(m.t, r.{rollup.column}) AS period_start, {key} AS key,
               {", ".join(f"m.{c} AS m_{c}, r.{c} AS r_{c}" for c, _ in columns)},
               greatest(m.changed, r.updated_at) AS changed
        FROM m FULL JOIN r ON {on}
        WHERE {differs}
    """


async def check_rollups(
    conn: AsyncConnection, since_ms: int, camera: str | None = None, now_ms: int | None = None, count: bool = False,
) -> tuple[int, list[RollupCheck]]:
    """Rows of the hour and day tables from the period holding ``since_ms`` on that differ from what they sum,
    and (with ``count``, for the audit's summary; the reconciler's passes skip it) how many rows were compared."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    checked = 0
    found: list[RollupCheck] = []
    kept = await existing(conn)
    for rollup in ROLLUP_TABLES.values():
        since = rollup.period(since_ms)
        parts = kept.get(rollups.source_of(rollup)[0])
        if parts and parts[0].start is not None:
            # Only whole periods whose parts are still kept: older minutes (or hours) are past their retention.
            since = max(since, rollup.period(_ms(parts[0].start) + rollup.span_ms - 1))
        params = {
            "since": datetime.fromtimestamp(since / 1000, tz=UTC), "until": datetime.fromtimestamp(now_ms / 1000 + 86400, tz=UTC),
            "camera": camera,
        }
        if count:
            checked += (await conn.execute(
                text(f"SELECT count(*) FROM {rollup.spec.name} WHERE {rollup.column} >= :since AND {rollup.column} < :until "
                     "AND (CAST(:camera AS text) IS NULL OR camera_id = :camera)"), params)).scalar_one()
        for r in await conn.execute(text(_rollup_sql(rollup)), params):
            differences = {
                c: {"summed": getattr(r, f"m_{c}"), "rollup": getattr(r, f"r_{c}")}
                for c, _ in rollups.exact_columns(rollup) if getattr(r, f"m_{c}") != getattr(r, f"r_{c}")
            }
            found.append(RollupCheck(rollup.spec.name, r.camera_id, r.site, _ms(r.period_start), r.key, differences, _ms(r.changed)))
    return checked, found


def rollup_state(check: RollupCheck, now_ms: int, grace_ms: int) -> str:
    """pending while the row or its minutes changed within ``grace_ms`` (rows on their way), else mismatch."""
    return PENDING if now_ms - check.changed_at < grace_ms else MISMATCH


# --- the sink's reconciler ------------------------------------------------------------

_SAVE = text("""
    INSERT INTO camera_minute_reconciliation
        (camera_id, minute, site, state, differences, edge_events, cloud_events, dropped, clock_suspect, checked_at)
    SELECT c, m, s, st, d::jsonb, ee, ce, dr, cs, now()
    FROM unnest(CAST(:cameras AS text[]), CAST(:minutes AS timestamptz[]), CAST(:sites AS text[]), CAST(:states AS text[]),
                CAST(:diffs AS text[]), CAST(:edge AS bigint[]), CAST(:cloud AS bigint[]), CAST(:dropped AS bigint[]),
                CAST(:suspect AS boolean[])) AS u(c, m, s, st, d, ee, ce, dr, cs)
    ON CONFLICT (camera_id, minute) DO UPDATE SET
        site = excluded.site, state = excluded.state, differences = excluded.differences, edge_events = excluded.edge_events,
        cloud_events = excluded.cloud_events, dropped = excluded.dropped, clock_suspect = excluded.clock_suspect, checked_at = now()
    WHERE (camera_minute_reconciliation.state, camera_minute_reconciliation.differences, camera_minute_reconciliation.clock_suspect)
          IS DISTINCT FROM (excluded.state, excluded.differences, excluded.clock_suspect)
""")
# Rows locked in camera order, as the sink's upsert locks them (sinks/writer.py):
# two transactions that take many rows in different orders can deadlock.
_LAST_MATCHED = text("""
    WITH m AS (SELECT camera_id, max(minute) AS minute FROM camera_minute_reconciliation WHERE state = 'match' GROUP BY camera_id),
    locked AS (
        SELECT s.camera_id, m.minute FROM camera_status s JOIN m USING (camera_id)
        WHERE s.last_matched_minute IS DISTINCT FROM m.minute
        ORDER BY s.camera_id COLLATE "C" FOR UPDATE OF s
    )
    UPDATE camera_status s SET last_matched_minute = locked.minute FROM locked WHERE s.camera_id = locked.camera_id
""")
_MISMATCHED = text("""
    SELECT camera_id, min(site) AS site, count(*) AS minutes, min(minute) AS first, max(minute) AS last
    FROM camera_minute_reconciliation WHERE state = 'mismatch' GROUP BY camera_id
""")
_OPEN_ALERTS = text("SELECT alert_id, camera_id, site, opened_at, detail FROM alerts WHERE kind = 'reconcile' AND state = 'open'")


@dataclass(frozen=True)
class _RollupMismatch:
    camera_id: str
    site: str
    table: str
    period: datetime


class Reconciler:
    """Every ``every_s``: check recent camera-minutes, keep the verdicts, open and close alerts."""

    def __init__(
        self, engine: AsyncEngine, every_s: float, window_s: float, grace_s: float,
        write_rows: Callable[[list[Row]], Awaitable[int]], clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.every_s = every_s
        self.window_ms = int(window_s * 1000)
        self.grace_ms = int(grace_s * 1000)
        self.write_rows = write_rows
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a failed pass is logged and tried again next time."""
        await every(stop, self.every_s, self.once, "reconciliation pass", log)

    async def once(self) -> list[Verdict]:
        """One pass; returns the verdicts it reached."""
        now = int(self.clock() * 1000)
        async with self.engine.begin() as conn:
            verdicts = [judge(c, now, self.grace_ms) for c in await check(conn, now - self.window_ms)]
            if verdicts:
                await conn.execute(_SAVE, {
                    "cameras": [v.camera_id for v in verdicts],
                    "minutes": [datetime.fromtimestamp(v.minute / 1000, tz=UTC) for v in verdicts],
                    "sites": [v.site for v in verdicts], "states": [v.state for v in verdicts],
                    "diffs": [json.dumps(v.differences, sort_keys=True) for v in verdicts],
                    "edge": [v.edge_events for v in verdicts], "cloud": [v.cloud_events for v in verdicts],
                    "dropped": [v.dropped for v in verdicts], "suspect": [v.clock_suspect for v in verdicts],
                })
                await conn.execute(_LAST_MATCHED)
            mismatched: dict[str, Any] = {r.camera_id: r for r in await conn.execute(_MISMATCHED)}
            _, differing = await check_rollups(conn, now - self.window_ms, now_ms=now)
            open_alerts = {r.camera_id: r for r in await conn.execute(_OPEN_ALERTS)}
        for bad in (c for c in differing if rollup_state(c, now, self.grace_ms) == MISMATCH):
            log.warning("%s %s %s at %s differs from its minutes: %s", bad.table, bad.camera_id, bad.key,
                        datetime.fromtimestamp(bad.period / 1000, tz=UTC).isoformat(), bad.differences)
            if bad.camera_id not in mismatched:
                mismatched[bad.camera_id] = _RollupMismatch(bad.camera_id, bad.site, bad.table, datetime.fromtimestamp(bad.period / 1000, tz=UTC))
        rows = [self._alert(r, now) for camera, r in mismatched.items() if camera not in open_alerts]
        rows += [self._closed(r, now) for camera, r in open_alerts.items() if camera not in mismatched]
        if rows:
            await self.write_rows(rows)
        return verdicts

    @staticmethod
    def _alert(r: Any, now: int) -> Row:
        if isinstance(r, _RollupMismatch):
            detail = f"{r.table} at {r.period:%Y-%m-%d %H:%M} UTC differs from the sums of its minutes (fleetsight audit)"
        else:
            detail = f"{r.minutes} minute(s) in SQL differ from the camera's ledger, {r.first:%Y-%m-%d %H:%M} to {r.last:%H:%M} UTC (fleetsight audit)"
        return Row(ALERTS.name, {
            "alert_id": f"{r.camera_id}|reconcile||{now}", "camera_id": r.camera_id, "site": r.site, "kind": "reconcile",
            "subject": "", "state": "open", "opened_at": now, "closed_at": None, "detail": detail, "version": 1,
        })

    @staticmethod
    def _closed(r: Any, now: int) -> Row:
        return Row(ALERTS.name, {
            "alert_id": r.alert_id, "camera_id": r.camera_id, "site": r.site, "kind": "reconcile", "subject": "",
            "state": "closed", "opened_at": _ms(r.opened_at), "closed_at": now, "detail": r.detail, "version": 2,
        })
