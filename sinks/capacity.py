"""The site capacity alert: more people inside a site than it may hold, for long enough.

Beside the sink, as the reconciler is: every ``capacity_check_s`` each site
with a ``capacity`` (``FLEETSIGHT_SITES``) is read from
``site_minute_occupancy``. It is over since the first of the latest run of
its minutes that were over, and an alert opens when that is
``capacity_for_s`` ago; it closes when the latest minute is at or under the
limit again (or the site's day started again: the count is back at zero).
The alert is a row of ``alerts`` like any other: the notifier's sweep of
that table posts it to the webhooks. Its detail says when a door of the
site is dark, since the figure may then be low.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.waiting import every
from schemas.aggregates import ALERTS, Row
from schemas.codec import MINUTE_MS
from schemas.sites import SiteRule
from schemas.times import from_ms, to_ms

log = logging.getLogger("fleetsight.capacity")

KIND = "capacity"
# Minutes read back, past the capacity's duration: a run of minutes over the limit longer than this is "since then".
LOOK_BACK_MS = 10 * MINUTE_MS

# The minutes since ``since``, and each site's last one before (a site where
# nobody came or went for a while is as full as it was: without that row it
# read as empty and its alert closed).
_MINUTES = text("""
    SELECT site, minute, day, inside, complete FROM site_minute_occupancy
    WHERE site = ANY(:sites) AND minute >= :since
    UNION ALL
    SELECT b.site, b.minute, b.day, b.inside, b.complete
    FROM unnest(CAST(:sites AS text[])) AS s(site) CROSS JOIN LATERAL (
        SELECT site, minute, day, inside, complete FROM site_minute_occupancy m
        WHERE m.site = s.site AND m.minute < :since AND m.minute >= :floor ORDER BY m.minute DESC LIMIT 1
    ) b
    ORDER BY site, minute
""")
# A site's day is at most 25 hours: a row older than this is from a day that is over.
FLOOR_MS = 26 * 3_600_000
_OPEN = text("SELECT alert_id, site, opened_at, detail FROM alerts WHERE kind = :kind AND state = 'open'")


@dataclass(frozen=True)
class Over:
    """A site over its capacity now: how many inside, since when, whether a door is dark."""

    inside: int
    since: int  # ms
    complete: bool


def over(rule: SiteRule, minutes: list[Any], now: int) -> Over | None:
    """Whether the site is over ``rule.capacity`` now, judged from its recent minutes (oldest first)."""
    if rule.capacity is None or not minutes:
        return None
    latest = minutes[-1]
    day_start, _ = rule.day_of(now)
    if to_ms(latest.day) != day_start or latest.inside <= rule.capacity:
        return None  # the day started again since (inside is 0), or it is under now
    since = to_ms(latest.minute)
    for row in reversed(minutes):
        if row.inside <= rule.capacity or to_ms(row.day) != day_start:
            break
        since = to_ms(row.minute)
    return Over(int(latest.inside), since, bool(latest.complete))


class CapacityWatch:
    """Opens and closes the capacity alerts of the sites that have a capacity."""

    def __init__(
        self, engine: AsyncEngine, rules: dict[str, SiteRule], every_s: float,
        write_rows: Callable[[list[Row]], Awaitable[int]], clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.rules = {site: rule for site, rule in rules.items() if rule.capacity is not None}
        self.every_s = every_s
        self.write_rows = write_rows
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a failed pass is logged and tried again next time."""
        if self.rules:
            await every(stop, self.every_s, self.once, "capacity check", log)

    async def once(self) -> list[Row]:
        """One pass: the alert rows it wrote."""
        now = int(self.clock() * 1000)
        since = min(now - int(rule.capacity_for_s * 1000) for rule in self.rules.values()) - LOOK_BACK_MS
        recent: dict[str, list[Any]] = {site: [] for site in self.rules}
        async with self.engine.connect() as conn:
            for row in await conn.execute(_MINUTES, {"sites": sorted(self.rules), "since": from_ms(since), "floor": from_ms(since - FLOOR_MS)}):
                recent[row.site].append(row)
            opened = {r.site: r for r in await conn.execute(_OPEN, {"kind": KIND})}
        rows = []
        for site, rule in sorted(self.rules.items()):
            state = over(rule, recent[site], now)
            if state is not None and site not in opened and now - state.since >= rule.capacity_for_s * 1000:
                rows.append(_alert(site, rule, state, now))
                log.warning("%s", rows[-1].values["detail"])
            elif state is None and site in opened:
                rows.append(_closed(opened[site], now))
        if rows:
            await self.write_rows(rows)
        return rows


def _alert(site: str, rule: SiteRule, state: Over, now: int) -> Row:
    local = from_ms(state.since).astimezone(rule.zone)
    detail = f"{state.inside} people inside {site}, over its capacity of {rule.capacity} since {local:%H:%M} ({rule.time_zone})"
    if not state.complete:
        detail += "; incomplete: a door of the site is offline or sending a backlog, so there may be more"
    return Row(ALERTS.name, {
        "alert_id": f"{site}|{KIND}||{now}", "camera_id": "", "site": site, "kind": KIND, "subject": "",
        "state": "open", "opened_at": now, "closed_at": None, "detail": detail, "version": 1,
    })


def _closed(r: Any, now: int) -> Row:
    return Row(ALERTS.name, {
        "alert_id": r.alert_id, "camera_id": "", "site": r.site, "kind": KIND, "subject": "",
        "state": "closed", "opened_at": to_ms(r.opened_at), "closed_at": now, "detail": r.detail, "version": 2,
    })
