"""Which partitions to make and drop (sinks/partitions.py's pure part)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sinks.partitions import Partition, next_start, partition_name, period_start, plan

NOW = datetime(2026, 12, 30, 15, 20, tzinfo=UTC)


def days(table: str, first: datetime, n: int) -> list[Partition]:
    return [Partition(partition_name(table, "day", first + timedelta(days=i)), first + timedelta(days=i), first + timedelta(days=i + 1))
            for i in range(n)]


def test_periods_are_utc_days_months_and_years() -> None:
    local = datetime(2027, 1, 1, 0, 30, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))  # still Dec 31 there
    assert period_start("day", local) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("month", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_start("month", datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("year", NOW) == datetime(2026, 1, 1, tzinfo=UTC)
    assert partition_name("camera_hour_counts", "month", datetime(2027, 1, 1, tzinfo=UTC)) == "camera_hour_counts_p202701"


def test_a_fresh_table_gets_today_and_the_days_ahead() -> None:
    todo = plan("camera_minute_counts", [], NOW, retention_days=90, ahead_days=7)
    assert [p.start.day for p in todo.create if p.start] == [30, 31, 1, 2, 3, 4, 5, 6]
    assert todo.drop == []


def test_new_partitions_continue_from_the_newest_with_no_hole_and_none_twice() -> None:
    # The sink was down for a week: the days between are made too, so no row can fall in a gap.
    have = days("camera_minute_counts", NOW.replace(hour=0, minute=0) - timedelta(days=20), 10)
    todo = plan("camera_minute_counts", have, NOW, retention_days=90, ahead_days=7)
    assert todo.create[0].start == have[-1].end
    assert all(a.end == b.start for a, b in zip(todo.create, todo.create[1:]))
    assert todo.create[-1].end > NOW + timedelta(days=7)
    again = plan("camera_minute_counts", have + todo.create, NOW, retention_days=90, ahead_days=7)
    assert again.create == []


def test_a_partition_is_dropped_a_day_after_all_of_it_is_past_the_retention() -> None:
    first = NOW.replace(hour=0, minute=0) - timedelta(days=95)
    have = days("camera_minute_counts", first, 100)
    todo = plan("camera_minute_counts", have, NOW, retention_days=90, ahead_days=7)
    cutoff = NOW - timedelta(days=91)
    assert todo.drop and all(p.end <= cutoff for p in todo.drop)
    kept = [p for p in have if p not in todo.drop]
    assert kept[0].end > cutoff
    assert plan("camera_minute_counts", have, NOW, retention_days=0, ahead_days=7).drop == []  # kept for ever


def test_the_legacy_partition_goes_when_all_of_it_is_past_the_retention() -> None:
    legacy = Partition("camera_minute_counts_legacy", None, datetime(2026, 11, 1, tzinfo=UTC))
    assert plan("camera_minute_counts", [legacy], NOW, 90, 7).drop == []
    assert plan("camera_minute_counts", [legacy], NOW + timedelta(days=60), 90, 7).drop == [legacy]


def test_hour_tables_are_cut_by_month_and_day_tables_by_year() -> None:
    hours = plan("camera_hour_counts", [], NOW, retention_days=730, ahead_days=7)
    assert [p.name for p in hours.create] == ["camera_hour_counts_p202612", "camera_hour_counts_p202701"]
    years = plan("zone_day_stats", [], NOW, retention_days=0, ahead_days=7)
    assert [p.name for p in years.create] == ["zone_day_stats_p2026", "zone_day_stats_p2027"]


def test_a_row_older_than_the_oldest_partition_gets_its_days_if_the_retention_keeps_them() -> None:
    have = days("camera_minute_counts", NOW.replace(hour=0, minute=0), 8)
    back = plan("camera_minute_counts", have, NOW, retention_days=90, ahead_days=7, back_to=NOW - timedelta(days=3))
    assert [p.start for p in back.create] == [NOW.replace(hour=0, minute=0) - timedelta(days=d) for d in (3, 2, 1)]
    assert back.create[-1].end == have[0].start
    # Past the retention, nothing is made: the row is left out.
    assert plan("camera_minute_counts", have, NOW, retention_days=2, ahead_days=7, back_to=NOW - timedelta(days=3)).create == []


def test_days_a_drop_took_are_never_made_again_for_a_late_row() -> None:
    """A process keeping longer than the one that dropped would make them for the next drop to take (issue 38)."""
    have = days("camera_minute_counts", NOW.replace(hour=0, minute=0), 8)
    floor = have[0].start  # a drop reached the oldest partition there is
    back = plan("camera_minute_counts", have, NOW, retention_days=90, ahead_days=7, back_to=NOW - timedelta(days=3), floor=floor)
    assert [p for p in back.create if p.end <= have[0].start] == []
    # A floor further back still lets the days after it be made.
    earlier = plan("camera_minute_counts", have, NOW, retention_days=90, ahead_days=7, back_to=NOW - timedelta(days=3),
                   floor=floor - timedelta(days=1))
    assert [p.start for p in earlier.create if p.end <= have[0].start] == [floor - timedelta(days=1)]
