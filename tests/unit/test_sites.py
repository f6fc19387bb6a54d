"""A site's day: when its count starts again, by its own clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.sites import SiteRule, rule_of


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


def test_a_day_starts_at_the_sites_local_time() -> None:
    berlin = SiteRule(time_zone="Europe/Berlin", day_starts="04:00")  # type: ignore[arg-type]
    assert berlin.day_of(ms("2026-12-07T03:10:00+00:00")) == (ms("2026-12-07T04:00:00+01:00"), ms("2026-12-08T04:00:00+01:00"))
    assert berlin.day_of(ms("2026-12-07T02:59:00+00:00")) == (ms("2026-12-06T04:00:00+01:00"), ms("2026-12-07T04:00:00+01:00"))
    assert rule_of({}, "any").day_of(ms("2026-12-07T23:59:00+00:00")) == (ms("2026-12-07T00:00:00+00:00"), ms("2026-12-08T00:00:00+00:00"))


def test_a_day_across_a_change_of_clocks_is_23_or_25_hours() -> None:
    berlin = SiteRule(time_zone="Europe/Berlin")
    start, end = berlin.day_of(ms("2026-03-29T12:00:00+02:00"))
    assert (end - start) / 3_600_000 == 23
    start, end = berlin.day_of(ms("2026-10-25T12:00:00+01:00"))
    assert (end - start) / 3_600_000 == 25


@pytest.mark.parametrize(("rule", "words"), [
    ({"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"day_starts": "04:00:30"}, "whole minutes"),
    ({"capacity": 0}, "greater than or equal to 1"),
    ({"limit": 10}, "Extra inputs"),
])
def test_a_bad_rule_says_what_is_wrong(rule: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        SiteRule.model_validate(rule)
