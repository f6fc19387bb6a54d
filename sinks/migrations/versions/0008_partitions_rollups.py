"""time-partitioned minute tables; hour and day rollup tables kept by the stream worker

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

- The seven per-minute tables become partitioned by ``minute`` (a day a
  partition, made and dropped by ``sinks/partitions.py``). The rows already
  there are not copied: the old table is attached whole as one partition,
  ``<table>_legacy``, covering everything before the day after its newest
  minute (PostgreSQL checks each row once, reading it; nothing is written, so
  the upgrade needs neither the memory nor the disk of a copy). It is dropped
  like any partition once all of it is past the retention.
- The rollup views ``camera_hour_counts`` ... ``zone_day_stats`` become
  tables of the same names and columns (plus ``events`` and ``updated_at``),
  partitioned by month (hours) and year (days), filled from the minutes a
  month at a time.
- Rows the stream worker had sent but the sink had not yet written when the
  pipeline stopped for the upgrade are in the worker's state: they are
  written to the minute tables first (the same version-guarded upsert as
  the sink's), so the rollups start from everything applied.
- The worker's state gets an hour and a day bucket for each rollup row a late
  event could still change, so it carries on from the figures in SQL.

Downgrade is refused: the rollup tables would have to become views again
over minutes that retention may already have dropped.
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MINUTE_TABLES = (
    "camera_minute_counts", "line_minute_crossings", "zone_minute_stats", "camera_minute_health",
    "camera_minute_events", "camera_minute_ledger", "camera_minute_reconciliation",
)
# Time-range queries without a camera or site: a BRIN index on the time (the sink writes in time order).
BRIN = ("camera_minute_counts", "line_minute_crossings", "zone_minute_stats", "camera_minute_health", "camera_minute_reconciliation")
ROLLUP_VERSION_COMMENT = "distinct events folded in (version): the sum of its minutes' events"  # the reconciler deletes verdicts of minutes gone
DAYS_AHEAD = 7
# Per rollup family: the minute table, the key columns between camera and time,
# the columns summed, the maxima, and the means with what weights them.
FAMILIES = {
    "counts": ("camera_minute_counts", "camera_hour_counts", "camera_day_counts", ("object_class",),
               ("objects", "tracks_ended", "events"), ("dwell_max_s",), (("dwell_mean_s", "tracks_ended"),),
               "Objects seen and dwell per camera and object class"),
    "lines": ("line_minute_crossings", "line_hour_crossings", "line_day_crossings", ("geometry", "line", "object_class"),
              ("crossings_in", "crossings_out", "events"), (), (), "Line crossings per camera, line and object class"),
    "zones": ("zone_minute_stats", "zone_hour_stats", "zone_day_stats", ("geometry", "zone", "object_class"),
              ("entries", "exits", "occupancy_samples", "events"), ("dwell_max_s", "occupancy_max"),
              (("dwell_mean_s", "exits"), ("occupancy_mean", "occupancy_samples")),
              "Zone entries, exits, dwell and occupancy per camera, zone and object class"),
    "health": ("camera_minute_health", "camera_hour_health", "camera_day_health", (),
               ("reports", "frames", "frames_skipped", "events"), ("inference_ms_p95", "outbox_depth_max"),
               (("fps_mean", "reports"), ("inference_ms_p50", "reports")), "Detector health per camera"),
}
# The worker's accumulators (streams/aggregate.py) behind each public column.
ACC = {
    "objects": "objects", "tracks_ended": "tracks_ended", "crossings_in": "crossings_in", "crossings_out": "crossings_out",
    "entries": "entries", "exits": "exits", "occupancy_samples": "occupancy_samples",
    "dwell_max_s": "dwell_max", "occupancy_max": "occupancy_max",
    "dwell_mean_s": "dwell_sum", "occupancy_mean": "occupancy_sum",
    "reports": "reports", "frames": "frames", "frames_skipped": "frames_skipped", "inference_ms_p95": "inference_ms_p95",
    "outbox_depth_max": "outbox_depth_max", "fps_mean": "fps_sum", "inference_ms_p50": "p50_sum",
}
OLD_VIEWS = (
    "fleet_overview", "camera_hour_counts", "camera_day_counts", "line_hour_crossings", "line_day_crossings",
    "zone_hour_stats", "zone_day_stats",
)
FLEET_OVERVIEW = """
    CREATE VIEW fleet_overview AS
    SELECT s.site,
           count(*) AS cameras,
           count(*) FILTER (WHERE s.online) AS online,
           count(*) FILTER (WHERE NOT s.online) AS offline,
           max(s.last_heard_at) AS last_heard_at,
           coalesce(sum(s.outbox_backlog), 0) AS outbox_backlog,
           coalesce(sum(s.seq_gaps), 0) AS seq_gaps,
           (SELECT coalesce(sum(c.objects), 0) FROM camera_day_counts c
             WHERE c.site = s.site AND c.day = date_trunc('day', now(), 'UTC')) AS objects_today,
           (SELECT count(*) FROM alerts a WHERE a.site = s.site AND a.state = 'open') AS open_alerts
    FROM camera_status s GROUP BY s.site"""


def _scalar(sql: str, **params: object) -> object:
    return op.get_bind().execute(sa.text(sql), params).scalar()


def _comment(target: str, comment: str) -> None:
    quoted = comment.replace("'", "''")
    op.execute(f"COMMENT ON {target} IS '{quoted}'")


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _next(grain: str, start: datetime) -> datetime:
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "month":
        return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.replace(year=start.year + 1)


def _partitions(table: str, grain: str, start: datetime, until: datetime) -> None:
    """Partitions of ``table`` from ``start`` (a period's start) through the one holding ``until``."""
    stamp = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}[grain]
    while start <= until:
        end = _next(grain, start)
        op.execute(
            f'CREATE TABLE "{table}_p{start.strftime(stamp)}" PARTITION OF "{table}" '
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        start = end


def _partition_minutes(table: str, now: datetime) -> None:
    bind = op.get_bind()
    comment = _scalar("SELECT obj_description(CAST(:t AS regclass), 'pg_class')", t=table)
    indexes = bind.execute(sa.text(
        "SELECT i.indexname, i.indexdef, c.conname FROM pg_indexes i "
        "LEFT JOIN pg_constraint c ON c.conname = i.indexname AND c.contype = 'p' "
        "WHERE i.schemaname = current_schema() AND i.tablename = :t"
    ), {"t": table}).all()
    key = bind.execute(sa.text(
        "SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey) "
        "WHERE x.indrelid = CAST(:t AS regclass) AND x.indisprimary ORDER BY array_position(x.indkey, a.attnum)"
    ), {"t": table}).scalars().all()
    legacy = f"{table}_legacy"
    for name, _, constraint in indexes:
        if constraint:
            op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{name}" TO "{legacy}_pkey"')
        else:
            op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_legacy"')
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{legacy}"')
    op.execute(f'CREATE TABLE "{table}" (LIKE "{legacy}" INCLUDING DEFAULTS INCLUDING COMMENTS) PARTITION BY RANGE (minute)')
    if comment:
        op.create_table_comment(table, str(comment))
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" PRIMARY KEY ({", ".join(key)})')
    for _, definition, constraint in indexes:
        if not constraint:
            op.execute(definition)  # made on the new parent: it names the table, not the renamed legacy
    if table in BRIN:
        op.execute(f'CREATE INDEX "ix_{table}_minute_brin" ON "{table}" USING brin (minute)')
    newest = _scalar(f'SELECT max(minute) FROM "{legacy}"')
    start = _day(now)
    if newest is None:
        op.execute(f'DROP TABLE "{legacy}"')
    else:
        # Up to today at least: the days since the last row need no partitions of their own.
        start = max(_day(newest) + timedelta(days=1), start)  # type: ignore[arg-type]
        op.execute(f"""ALTER TABLE "{table}" ATTACH PARTITION "{legacy}" FOR VALUES FROM (MINVALUE) TO ('{start.isoformat()}')""")
    _partitions(table, "day", start, now + timedelta(days=DAYS_AHEAD))
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON "{table}" TO fleetsight_writer')
    op.execute(f'GRANT SELECT ON "{table}" TO fleetsight_analyst')


def _rollup_table(name: str, minute_table: str, period: str, dims: tuple[str, ...], what: str) -> None:
    """``name``: ``minute_table``'s columns with ``period`` for ``minute``, partitioned by it."""
    op.execute(f'CREATE TABLE "{name}" (LIKE "{minute_table}" INCLUDING DEFAULTS INCLUDING COMMENTS) PARTITION BY RANGE (minute)')
    op.execute(f'ALTER TABLE "{name}" RENAME COLUMN minute TO {period}')
    _comment(f'COLUMN "{name}".{period}', f"start of the {period}, event time, UTC")
    _comment(f'COLUMN "{name}".events', ROLLUP_VERSION_COMMENT)
    if minute_table == "zone_minute_stats":
        _comment(f'COLUMN "{name}".dwell_mean_s', "mean time inside of the exits, seconds")
    _comment(f'TABLE "{name}"', f"{what} per UTC {period}: the sums of its minutes, kept by the stream worker.")
    op.execute(f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_pkey" PRIMARY KEY ({", ".join(["camera_id", *dims, period])})')
    op.create_index(f"ix_{name}_site_{period}", name, ["site", period])
    if period == "hour":
        op.execute(f'CREATE INDEX "ix_{name}_hour_brin" ON "{name}" USING brin (hour)')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON "{name}" TO fleetsight_writer')
    op.execute(f'GRANT SELECT ON "{name}" TO fleetsight_analyst')


def _minute_rows_from_worker_state(minute_table: str, dims: tuple[str, ...], sums: tuple[str, ...],
                                   maxima: tuple[str, ...], means: tuple[tuple[str, str], ...]) -> None:
    """Write what the worker applied and the sink may not have yet (version-guarded, as the sink does)."""
    def acc(column: str) -> str:
        return f"(b.state->'acc'->>'{ACC[column]}')::float8"

    values = {
        "camera_id": "b.state->>'camera_id'",
        **{d: (f"coalesce(b.state->'dims'->>'{d}', '')" if d == "geometry" else f"b.state->'dims'->>'{d}'") for d in dims},
        "minute": "to_timestamp((b.state->>'minute')::float8 / 1000)",
        "site": "b.state->>'site'",
        **{s: f"coalesce({acc(s)}, 0)::bigint" for s in sums if s != "events"},
        **{m: acc(m) for m in maxima},
        **{m: f"{acc(m)} / nullif({acc(w)}, 0)" for m, w in means},
        "events": "(SELECT coalesce(sum((r->>1)::bigint - (r->>0)::bigint + 1), 0) FROM jsonb_array_elements(b.state->'seqs') r)",
    }
    key = ("camera_id", *dims, "minute")
    columns = ", ".join(values)
    op.execute(f"""
        INSERT INTO "{minute_table}" ({columns})
        SELECT DISTINCT ON ({", ".join(key)}) * FROM (
            SELECT {", ".join(f"{expr} AS {name}" for name, expr in values.items())}
            FROM stream_buckets b WHERE b.state->>'table' = '{minute_table}'
        ) s ORDER BY {", ".join(key)}, events DESC
        ON CONFLICT ({", ".join(key)}) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in values if c not in key)}, updated_at = now()
        WHERE "{minute_table}".events < excluded.events
    """)


def _rollup_rows(source: str, target: str, source_time: str, period: str, dims: tuple[str, ...], sums: tuple[str, ...],
                 maxima: tuple[str, ...], means: tuple[tuple[str, str], ...], start: datetime, end: datetime) -> None:
    group = ("camera_id", *dims, f"date_trunc('{period}', {source_time}, 'UTC')")
    select = {
        **{g: g for g in group[:-1]},
        period: group[-1],
        "site": "max(site)",
        **{s: f"sum({s})" for s in sums},
        **{m: f"max({m})" for m in maxima},
        **{m: f"sum({m} * {w}) / nullif(sum({w}), 0)" for m, w in means},
    }
    op.execute(sa.text(f"""
        INSERT INTO "{target}" ({", ".join(select)})
        SELECT {", ".join(select.values())}
        FROM "{source}" WHERE {source_time} >= :start AND {source_time} < :end
        GROUP BY {", ".join(group)}
    """).bindparams(start=start, end=end))


def _seed_worker_state(target: str, period: str, span_ms: int, dims: tuple[str, ...], sums: tuple[str, ...],
                       maxima: tuple[str, ...], means: tuple[tuple[str, str], ...], since: datetime) -> None:
    """An hour or day bucket in the worker's state for each rollup row a late event could still change."""
    # Keys as streams.aggregate.bucket_key makes them: camera|table|dims in key order|period start (ms);
    # geometry is a dim only when the events carried one (not '').
    key_parts = ["r.camera_id", f"'{target}'"]
    for d in dims:
        key_parts.append("CASE WHEN r.geometry = '' THEN NULL ELSE r.geometry END" if d == "geometry" else f"r.{d}")
    period_ms = f"(extract(epoch FROM r.{period}) * 1000)::bigint"
    dims_json = ", ".join(
        f"'{d}', CASE WHEN r.geometry = '' THEN NULL ELSE r.geometry END" if d == "geometry" else f"'{d}', r.{d}" for d in dims
    )
    acc_json = ", ".join([
        *(f"'{ACC[s]}', r.{s}" for s in sums if s != "events"),
        *(f"'{ACC[m]}', r.{m}" for m in maxima),
        *(f"'{ACC[m]}', r.{m} * r.{w}" for m, w in means),
    ])
    op.execute(sa.text(f"""
        INSERT INTO stream_buckets (app, key, partition, minute, state)
        SELECT c.app, concat_ws('|', {", ".join(key_parts)}, {period_ms}), c.partition, {period_ms} + {span_ms} - 60000,
               jsonb_build_object(
                   'table', '{target}', 'camera_id', r.camera_id, 'site', r.site,
                   'dims', jsonb_strip_nulls(jsonb_build_object({dims_json})),
                   'minute', {period_ms}, 'last', {period_ms} + {span_ms} - 60000,
                   'acc', jsonb_strip_nulls(jsonb_build_object({acc_json})), 'events', r.events)
        FROM "{target}" r JOIN stream_cameras c ON c.camera_id = r.camera_id
        WHERE r.{period} + interval '{span_ms // 1000} seconds' > :since
        ON CONFLICT (app, key) DO NOTHING
    """).bindparams(since=since))


def upgrade() -> None:
    now = datetime.now(UTC)
    for view in OLD_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for table in MINUTE_TABLES:
        _partition_minutes(table, now)

    earliest = min(
        (m for m in (_scalar(f'SELECT min(minute) FROM "{family[0]}"') for family in FAMILIES.values()) if m is not None),
        default=now,
    )
    oldest_bucket = _scalar("SELECT min(minute) FROM stream_buckets")
    # Periods that end after this get a bucket in the worker's state: two days
    # back (late events are accepted for 24 h by default), or as far back as
    # the worker still holds minutes (a longer FLEETSIGHT_LATE_AFTER_S).
    since = now - timedelta(days=2)
    if oldest_bucket is not None:
        since = min(since, datetime.fromtimestamp(int(oldest_bucket) / 1000, tz=UTC))  # type: ignore[call-overload]

    for minute_table, hour_table, day_table, dims, sums, maxima, means, what in FAMILIES.values():
        _minute_rows_from_worker_state(minute_table, dims, sums, maxima, means)
        _rollup_table(hour_table, minute_table, "hour", dims, what)
        _rollup_table(day_table, minute_table, "day", dims, what)
        month = _day(earliest).replace(day=1)
        _partitions(hour_table, "month", month, now + timedelta(days=DAYS_AHEAD))
        _partitions(day_table, "year", month.replace(month=1), now + timedelta(days=DAYS_AHEAD))
        # A month of minutes at a time: each statement's work stays a month's, whatever the history.
        while month <= now:
            end = _next("month", month)
            _rollup_rows(minute_table, hour_table, "minute", "hour", dims, sums, maxima, means, month, end)
            _rollup_rows(hour_table, day_table, "hour", "day", dims, sums, maxima, means, month, end)
            month = end
        _seed_worker_state(hour_table, "hour", 3_600_000, dims, sums, maxima, means, since)
        _seed_worker_state(day_table, "day", 86_400_000, dims, sums, maxima, means, since)
    # JIT off for this database: a query over the partitioned tables is costed
    # as if it read every partition (runtime pruning drops them later), which
    # passes the JIT thresholds; compiling then took 2.0 s of a 1.3 s query
    # that read 93,000 rows (bench/sql_scale.py, README's last-hour query).
    op.execute("""
        DO $$ BEGIN
            EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'not the database owner: run ALTER DATABASE ... SET jit = off as the owner (README: History, retention and rollups)';
        END $$""")
    op.execute(FLEET_OVERVIEW)
    op.execute("GRANT SELECT ON fleet_overview TO fleetsight_analyst")
    _comment("COLUMN stream_buckets.minute", "start of the (last) minute the bucket covers, ms")
    _comment("TABLE stream_buckets", "Stream worker state: per-minute sums and their seqs, and hour and day sums, until their last minute is closed.")


def downgrade() -> None:
    raise RuntimeError(
        "revision 0008 (partitioned minute tables, rollup tables) cannot be undone: the rollup tables would have to become "
        "views over minutes that retention may have dropped. Restore the backup taken before the upgrade instead."
    )
