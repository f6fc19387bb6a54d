"""The sink's side of the partitions: keeps them made and dropped, and rows out of ones that are gone.

A row whose time has no partition would fail its whole batch for good
("no partition of relation ... found for row"), and the sink would retry
it for ever. So before each write the sink checks each row's time against
the partitions it knows: past the newest, it makes the partitions due now
(the bridge refuses clocks far ahead, so that is today's); before the
oldest, it makes the partitions back to it if the retention keeps that
time (a fresh install meeting an edge's backlog from the day before).
What still has no partition (older than the retention: the stream worker
sends such events down the late path, so this is only a net for a worker
with other settings) is left out, logged and counted
(``fleetsight_sink_rows_expired``), and so is a row already past its
table's retention whose partition only waits out its day of grace: written,
it would go with the partition at the next maintenance, unannounced.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.settings import DatabaseSettings
from schemas.aggregates import TIME_PARTITIONED, Row
from schemas.times import from_ms, to_ms
from sinks import metrics as sink_metrics
from sinks.partitions import bounds_of, existing, maintain, past_retention

log = logging.getLogger("fleetsight.partitions")


class PartitionKeeper:
    """Runs partition maintenance for the sink and screens rows against the partitions there are."""

    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.bounds: dict[str, tuple[int | None, int]] = {}  # table -> [oldest start, newest end) in ms
        self._last: float | None = None  # monotonic time of the last run (None: never; monotonic may start near 0)

    async def maintain(self, back_to: dict[str, datetime] | None = None) -> None:
        """Make and drop what is due (and partitions back to ``back_to`` per table, within the retention);
        without the rights to (a login that may only write rows), read what there is."""
        self._last = time.monotonic()
        try:
            report = await maintain(self.engine, self.settings.retention_of, self.settings.partitions_ahead_days, back_to=back_to)
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state == "42501":  # insufficient privilege
                log.error(
                    "partition maintenance could not run (%s); run `fleetsight db partitions` as the tables' owner "
                    "(e.g. daily), or give the sink that login", str(exc.orig).splitlines()[0],
                )
            elif state == "55P03":  # lock_timeout on the maintenance lock: another sink or the daily job holds it
                log.warning("partition maintenance is running elsewhere; trying again in a minute")
                self._last = time.monotonic() - max(0.0, self.settings.partition_maintenance_every_s - 60)
            else:
                raise
            async with self.engine.begin() as conn:
                bounds = bounds_of(await existing(conn))
        else:
            bounds = report.bounds
            for table, _ in report.created:
                sink_metrics.PARTITIONS_MADE.labels(table).inc()
            for table, _ in report.dropped:
                sink_metrics.PARTITIONS_DROPPED.labels(table).inc()
        self.bounds = {t: (to_ms(start) if start else None, to_ms(end)) for t, (start, end) in bounds.items()}

    def due(self) -> bool:
        return self._last is None or time.monotonic() - self._last >= self.settings.partition_maintenance_every_s

    async def admit(self, rows: list[Row]) -> list[Row]:
        """``rows`` less those older than their table's oldest partition; makes partitions for rows past the newest."""
        # By resolution, not table: the reconciler writes verdicts for the minutes the ledger rows name.
        older: dict[str, int] = {}
        for row in rows:
            t = self._time(row)
            if t is not None and self._before(row):
                resolution = TIME_PARTITIONED[row.table][1]
                older[resolution] = min(older.get(resolution, t), t)
        if older or any(self._past(row) for row in rows):
            await self.maintain(back_to={
                table: from_ms(older[resolution])
                for table, (_, resolution) in TIME_PARTITIONED.items() if resolution in older
            })
        kept: list[Row] = []
        expired: Counter[str] = Counter()
        grace: Counter[str] = Counter()
        now = datetime.now(UTC)
        for row in rows:
            if self._before(row) or self._past(row):
                expired[row.table] += 1
            elif self._past_retention(row, now):
                grace[row.table] += 1
            else:
                kept.append(row)
        for table, n in expired.items():
            sink_metrics.SINK_ROWS_EXPIRED.labels(table).inc(n)
            log.error(
                "left out %d %s rows: their time has no partition (the table keeps %d days, FLEETSIGHT_RETENTION_DAYS, "
                "and partitions are made %d days ahead)", n, table, self.settings.retention_of(table), self.settings.partitions_ahead_days,
            )
        for table, n in grace.items():
            # Written, they would go with their partition at the next maintenance without a word (issue 38).
            sink_metrics.SINK_ROWS_EXPIRED.labels(table).inc(n)
            log.error(
                "left out %d %s rows: their time is past the %d days the table keeps (FLEETSIGHT_RETENTION_DAYS); "
                "their partition stays only for a day of grace and is then dropped (a worker with a longer retention?)",
                n, table, self.settings.retention_of(table),
            )
        return kept

    def _time(self, row: Row) -> int | None:
        partitioned = TIME_PARTITIONED.get(row.table)
        return None if partitioned is None or row.table not in self.bounds else int(row.values[partitioned[0]])

    def _before(self, row: Row) -> bool:
        t = self._time(row)
        oldest = self.bounds[row.table][0] if t is not None else None
        return t is not None and oldest is not None and t < oldest

    def _past(self, row: Row) -> bool:
        t = self._time(row)
        return t is not None and t >= self.bounds[row.table][1]

    def _past_retention(self, row: Row, now: datetime) -> bool:
        """Whether ``row``'s partition ends before what its table keeps: the next maintenance drops it."""
        t = self._time(row)
        return t is not None and past_retention(
            row.table, from_ms(t), now, self.settings.retention_of(row.table),
        )
