"""The site capacity rule: over since the first of the latest run of minutes over it, in the site's current day."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from schemas.sites import SiteRule
from sinks.capacity import over

RULE = SiteRule(time_zone="Europe/Berlin", capacity=10, capacity_for_s=120)
NOW = int(datetime(2026, 12, 7, 15, 0, tzinfo=UTC).timestamp() * 1000)
DAY = datetime.fromtimestamp(RULE.day_of(NOW)[0] / 1000, tz=UTC)


def minute(ago_min: int, inside: int, complete: bool = True, day: datetime = DAY) -> SimpleNamespace:
    return SimpleNamespace(minute=datetime.fromtimestamp((NOW - ago_min * 60_000) / 1000, tz=UTC), day=day, inside=inside, complete=complete)


def test_over_since_the_first_minute_of_the_latest_run_over_the_limit() -> None:
    rows = [minute(30, 12), minute(20, 8), minute(15, 11), minute(3, 14, complete=False)]
    state = over(RULE, rows, NOW)
    assert state is not None and (state.inside, state.complete) == (14, False)
    assert state.since == NOW - 15 * 60_000  # the dip to 8 ended the earlier run


def test_a_quiet_site_stays_as_full_as_its_last_minute_left_it() -> None:
    # Nobody came or went for 40 minutes: the last minute (read from before the window) still counts.
    state = over(RULE, [minute(40, 12)], NOW)
    assert state is not None and state.since == NOW - 40 * 60_000


def test_under_the_limit_or_a_new_day_is_not_over() -> None:
    assert over(RULE, [minute(5, 12), minute(1, 10)], NOW) is None  # at the limit is not over it
    yesterday = datetime.fromtimestamp(RULE.day_of(NOW)[0] / 1000 - 86_400, tz=UTC)
    assert over(RULE, [minute(600, 50, day=yesterday)], NOW) is None  # the count started again at the site's day start
    assert over(SiteRule(), [minute(1, 500)], NOW) is None  # no capacity: never over
