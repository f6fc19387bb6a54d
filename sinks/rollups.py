"""How each column of an hour or day table is made from its minutes, in SQL.

The stream worker keeps the rollups itself (``streams/aggregate.py``); this
is the same rule written as SQL, for what reads or rebuilds them from the
minutes: the reconciliation's check (``sinks/reconcile.py``) and the scale
benchmark's fill (``bench/sql_scale.py``). Revision 0008 keeps its own copy,
as migrations do.
"""

from __future__ import annotations

from schemas.aggregates import ROLLUPS, Rollup

# column -> (aggregate, weight): sums of counts, maxima, and means weighted by what they average.
HOW: dict[str, tuple[str, str | None]] = {
    **{c: ("sum", None) for c in (
        "objects", "tracks_ended", "crossings_in", "crossings_out", "entries", "exits", "occupancy_samples", "events",
        "reports", "frames", "frames_skipped", "people_seen", "people_overlapping",
    )},
    **{c: ("max", None) for c in ("dwell_max_s", "occupancy_max", "inference_ms_p95", "outbox_depth_max")},
}
# column -> (numerator, denominator): a share of two sums, as the worker works it out from its sums.
SHARES: dict[str, tuple[str, str]] = {"crowding": ("people_overlapping", "people_seen")}
MEANS: dict[str, dict[str, str]] = {  # minute table -> mean column -> its weight
    "camera_minute_counts": {"dwell_mean_s": "tracks_ended"},
    "zone_minute_stats": {"dwell_mean_s": "exits", "occupancy_mean": "occupancy_samples"},
    "camera_minute_health": {"fps_mean": "reports", "inference_ms_p50": "reports"},
}


def dims(rollup: Rollup) -> list[str]:
    """Key columns between the camera and the period."""
    return [k for k in rollup.spec.key if k not in ("camera_id", rollup.column)]


def source_of(rollup: Rollup) -> tuple[str, str]:
    """(table, time column) a rollup sums: an hour its minutes, a day its hours."""
    if rollup.column == "day":
        return next(r.spec.name for r in ROLLUPS[rollup.base.name] if r.column == "hour"), "hour"
    return rollup.base.name, "minute"


def exact_columns(rollup: Rollup) -> list[tuple[str, str]]:
    """(column, aggregate) of the columns a rollup must match exactly: the counts and the maxima (means are floats)."""
    return [(c, HOW[c][0]) for c in rollup.spec.values if c in HOW]


def select_from(rollup: Rollup) -> str:
    """SELECT of ``rollup``'s rows from what it sums (:func:`source_of`), over ``:start <= time < :end``."""
    source, time_column = source_of(rollup)
    period = f"date_trunc('{rollup.column}', {time_column}, 'UTC')"
    means = MEANS.get(rollup.base.name, {})
    columns = {
        "camera_id": "camera_id", **{d: d for d in dims(rollup)}, rollup.column: period, "site": "max(site)",
        **{c: f"{HOW[c][0]}({c})" for c in rollup.spec.values if c in HOW},
        **{m: f"sum({m} * {w}) / nullif(sum({w}), 0)" for m, w in means.items()},
        **{c: f"CAST(sum({n}) AS float8) / nullif(sum({d}), 0)" for c, (n, d) in SHARES.items() if c in rollup.spec.values},
    }
    return (
        f"SELECT {', '.join(f'{expr} AS {name}' for name, expr in columns.items())} FROM {source} "
        f"WHERE {time_column} >= :start AND {time_column} < :end GROUP BY {', '.join(['camera_id', *dims(rollup), period])}"
    )


def insert_from(rollup: Rollup) -> str:
    """INSERT of :func:`select_from` into the rollup table (rows not there yet)."""
    columns = ["camera_id", *dims(rollup), rollup.column, "site", *[c for c in rollup.spec.values if c != "site"]]
    return f"INSERT INTO {rollup.spec.name} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM ({select_from(rollup)}) s"
