"""A site's own rules: its time zone, when its day starts, and how many people it may hold.

Site occupancy (``sinks/site_occupancy.py``) counts the people inside a
site from the crossings of its entrance lines, and starts every day at
zero: the counters of a people-counting product drift (a person walks in
with a crowd and out alone), and a daily reset at a quiet hour keeps the
drift to one day. The day starts at ``day_starts`` local time in the
site's ``time_zone``, so a shop in Berlin resets at its own night, not at
UTC midnight; a site no rule names uses UTC midnight and no capacity.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.times import from_ms, to_ms

MINUTE_MS = 60_000


class SiteRule(BaseModel):
    """One site's settings (``FLEETSIGHT_SITES``: site id -> these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_zone: str = Field("UTC", description="IANA zone of the site, e.g. Europe/Berlin: its day starts by its clock")
    day_starts: time = Field(time(0, 0), description="local time the day's count starts again at zero (HH:MM)")
    capacity: int | None = Field(None, ge=1, description="people the site may hold; over it for capacity_for_s opens an alert")
    capacity_for_s: float = Field(60.0, ge=0, description="how long the site must stay over capacity before the alert opens")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: an IANA name such as Europe/Berlin or America/Chicago") from None
        return value

    @model_validator(mode="after")
    def _whole_minute(self) -> SiteRule:
        if self.day_starts.second or self.day_starts.microsecond:
            raise ValueError("day_starts is a time of whole minutes (HH:MM)")
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def day_of(self, minute_ms: int) -> tuple[int, int]:
        """Start and end (ms, UTC) of the site's day that holds ``minute_ms``.

        A day is from ``day_starts`` one local date to ``day_starts`` the
        next: 23 or 25 hours across a change of clocks.
        """
        local = from_ms(minute_ms).astimezone(self.zone)
        date = local.date() if local.time() >= self.day_starts else local.date() - timedelta(days=1)
        start = datetime.combine(date, self.day_starts, tzinfo=self.zone)
        end = datetime.combine(date + timedelta(days=1), self.day_starts, tzinfo=self.zone)
        # A start time the clocks skip (02:30 on the night of a spring change) is
        # read as the moment after the gap, by zoneinfo's fold rules: still one
        # day per date.
        return to_ms(start), to_ms(end)


UTC_MIDNIGHT = SiteRule()


def rule_of(rules: dict[str, SiteRule], site: str) -> SiteRule:
    """``site``'s rule, or UTC midnight and no capacity."""
    return rules.get(site, UTC_MIDNIGHT)
