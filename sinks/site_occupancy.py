"""People inside each site, from the crossings of its entrances: kept in SQL by the sink.

A camera line marked ``entrance`` (``edge/config.py``) is a door of the
camera's site; its geometry event carries the mark, so
``camera_geometry.definition`` says which lines of which geometry version
are doors, and the view ``site_entrances`` lists them. A site's people in
and out in a minute are the person crossings of its doors in that minute,
read from ``line_minute_crossings``: that table is already exact through
duplicates, late events and outages, so these figures are too, and a
door's backlog that lands late corrects its minutes and every later minute
of the site's day the moment its rows are written.

Why here and not in the stream worker: a site's doors are cameras on
different partitions of the events topic, so the worker would need the
events again, keyed by site (a repartition through Kafka), and a second
exact state beside the per-camera one. The line rows already reach one
place keyed by nothing but their values, and recomputing a site-day from
them is a function of what is in SQL: replays, duplicates and two sinks
writing at once (an advisory lock per site orders them) cannot make it
differ from the doors' crossings. ``fleetsight audit`` checks exactly
that.

Per site and minute (``site_minute_occupancy``): ``net`` is in minus out
since the day started (``schemas/sites.py``: the site's local reset);
``inside = net + corrected`` where ``corrected`` is how many exits the
day had to ignore so that inside never went below zero (a door counting
an exit it missed the entry of), kept, not hidden. ``peak`` is the most
inside at either edge of the minute. A minute is ``complete`` when no
door of the site is dark for it: a door is dark from the minute of its
newest event while it is offline, reports a backlog, or sends events much
older than their arrival (catching up): its outbox sends oldest first, so
what it sent is everything before that.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from runtime.settings.base import RETENTION_DEFAULTS
from schemas.aggregates import CAMERA_GEOMETRY, CAMERA_STATUS, DAY_MS, HOUR_MS, LINE_MINUTE_CROSSINGS, Row
from schemas.codec import MINUTE_MS
from schemas.sites import SiteRule, rule_of
from schemas.times import from_ms, to_ms

log = logging.getLogger("fleetsight.sites")

PERSON = "person"
# The first key of the sink's per-site advisory locks ("FSSI" in ASCII); the site's hash is the second.
SITE_LOCK = 0x46535349


@dataclass(frozen=True)
class SiteDay:
    """A site's day to recompute from ``since`` on."""

    site: str
    start: int  # ms, the day's start by the site's rule
    end: int
    since: int  # the first minute whose crossings may have changed


def site_days(changed: Iterable[tuple[str, int]], rules: dict[str, SiteRule]) -> list[SiteDay]:
    """Per site and day touched by ``changed`` (site, minute ms): the day and its earliest changed minute."""
    earliest: dict[tuple[str, int, int], int] = {}
    for site, minute in changed:
        start, end = rule_of(rules, site).day_of(minute)
        key = (site, start, end)
        earliest[key] = min(earliest.get(key, minute), minute)
    return [SiteDay(site, start, end, since) for (site, start, end), since in sorted(earliest.items())]


_NEVER = datetime.max.replace(tzinfo=UTC)  # no door is dark: no minute from here on


_ENTRANCES = text("SELECT site, camera_id, geometry, line FROM site_entrances WHERE site = ANY(:sites)")
_DEFINED = text("""
    SELECT camera_id, geometry FROM camera_geometry
    WHERE definition IS NOT NULL AND (camera_id, geometry) IN (SELECT * FROM unnest(CAST(:cameras AS text[]), CAST(:geometries AS text[])))
""")
# Ordered by site, so two sinks (or the reconciler beside one) take them in one order.
_LOCK = text(f"SELECT pg_advisory_xact_lock({SITE_LOCK}, hashtext(s)) FROM (SELECT DISTINCT unnest(CAST(:sites AS text[])) AS s ORDER BY 1) x")
# Per site: the first minute a dark door has not sent yet (null: none is dark).
_DARK_FROM = text("""
    SELECT d.site, min(date_trunc('minute', coalesce(s.last_event_at, '-infinity'), 'UTC')) AS dark_from
    FROM (SELECT DISTINCT site, camera_id FROM site_entrances WHERE site = ANY(:sites)) d
    JOIN camera_status s ON s.camera_id = d.camera_id
    WHERE NOT s.online OR coalesce(s.outbox_backlog, 0) > 0
       OR s.last_event_at - make_interval(secs => coalesce(s.clock_offset_s, 0)) < s.last_heard_at - make_interval(secs => :behind)
    GROUP BY d.site
""")
# A door whose newest event is this much older than its arrival is sending a
# backlog, whatever its last health report said: those reports wait in the
# same outbox, so the one read while it catches up is from before it went
# dark. (A live camera sends a health report every 30 s by default.)
CATCHING_UP_S = 120.0
# The site-days' minutes from ``since`` on, from the doors' person crossings
# and the site's row before ``since`` that day (none: the day starts at 0).
_MINUTES = text("""
    WITH t AS (
        SELECT * FROM unnest(CAST(:sites AS text[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]),
                             CAST(:sinces AS timestamptz[]), CAST(:darks AS timestamptz[])) AS t(site, day, day_end, since, dark_from)
    ),
    flows AS (
        SELECT t.site, t.day, l.minute, t.dark_from,
               sum(CASE WHEN e.direction = 'in' THEN l.crossings_in ELSE l.crossings_out END) AS people_in,
               sum(CASE WHEN e.direction = 'in' THEN l.crossings_out ELSE l.crossings_in END) AS people_out
        FROM t
        JOIN site_entrances e ON e.site = t.site
        JOIN line_minute_crossings l
          ON l.camera_id = e.camera_id AND l.geometry = e.geometry AND l.line = e.line AND l.object_class = :person
         AND l.minute >= t.since AND l.minute < t.day_end AND l.minute >= :low AND l.minute < :high
        GROUP BY t.site, t.day, l.minute, t.dark_from
    ),
    before AS MATERIALIZED (  -- once per site-day (inlined, it ran again for every minute of flows)
        SELECT t.site, t.day, b.net, b.corrected, b.inside
        FROM t CROSS JOIN LATERAL (
            SELECT net, corrected, inside FROM site_minute_occupancy m
            WHERE m.site = t.site AND m.minute >= t.day AND m.minute < t.since AND m.minute >= :first_day AND m.minute < :high
            ORDER BY m.minute DESC LIMIT 1
        ) b
    ),
    run AS (
        SELECT f.*, coalesce(b.net, 0) + sum(f.people_in - f.people_out) OVER w AS net,
               coalesce(b.corrected, 0) AS corrected_before, coalesce(b.inside, 0) AS inside_before
        FROM flows f LEFT JOIN before b USING (site, day)
        WINDOW w AS (PARTITION BY f.site, f.day ORDER BY f.minute)
    ),
    fixed AS (
        SELECT r.*, greatest(r.corrected_before, max(-r.net) OVER w) AS corrected
        FROM run r WINDOW w AS (PARTITION BY r.site, r.day ORDER BY r.minute)
    )
    INSERT INTO site_minute_occupancy AS o (site, minute, day, people_in, people_out, inside, peak, net, corrected, complete)
    SELECT site, minute, day, people_in, people_out, net + corrected,
           greatest(net + corrected, lag(net + corrected, 1, inside_before) OVER (PARTITION BY site, day ORDER BY minute)),
           net, corrected, dark_from IS NULL OR minute < dark_from
    FROM fixed
    ON CONFLICT (site, minute) DO UPDATE SET
        day = excluded.day, people_in = excluded.people_in, people_out = excluded.people_out, inside = excluded.inside,
        peak = excluded.peak, net = excluded.net, corrected = excluded.corrected, complete = excluded.complete, updated_at = now()
    WHERE (o.day, o.people_in, o.people_out, o.inside, o.peak, o.net, o.corrected, o.complete)
          IS DISTINCT FROM (excluded.day, excluded.people_in, excluded.people_out, excluded.inside, excluded.peak,
                            excluded.net, excluded.corrected, excluded.complete)
    RETURNING o.site, o.minute
""")
# Minutes whose completeness changed with the doors' status (a dark door's
# minutes are few: the partial index on incomplete minutes finds them).
_COMPLETE = text("""
    WITH t AS (SELECT * FROM unnest(CAST(:sites AS text[]), CAST(:darks AS timestamptz[])) AS t(site, dark_from)),
    done AS (
        UPDATE site_minute_occupancy o SET complete = true, updated_at = now() FROM t
        WHERE o.site = t.site AND NOT o.complete AND (t.dark_from IS NULL OR o.minute < t.dark_from)
        RETURNING o.site, o.minute
    ),
    dark AS (
        UPDATE site_minute_occupancy o SET complete = false, updated_at = now() FROM t
        WHERE o.site = t.site AND o.complete AND t.dark_from IS NOT NULL AND o.minute >= t.dark_from AND o.minute >= :darkest
        RETURNING o.site, o.minute
    )
    SELECT site, minute FROM done UNION ALL SELECT site, minute FROM dark
""")
# UTC hours from their minutes, as in the other hour tables.
_HOURS = text("""
    WITH t AS (SELECT * FROM unnest(CAST(:sites AS text[]), CAST(:froms AS timestamptz[]), CAST(:tos AS timestamptz[])) AS t(site, f, u))
    INSERT INTO site_hour_occupancy AS o (site, hour, people_in, people_out, inside, peak, corrected, complete)
    SELECT m.site, date_trunc('hour', m.minute, 'UTC'), sum(m.people_in), sum(m.people_out), (array_agg(m.inside ORDER BY m.minute DESC))[1],
           max(m.peak), (array_agg(m.corrected ORDER BY m.minute DESC))[1], bool_and(m.complete)
    FROM t JOIN site_minute_occupancy m ON m.site = t.site AND m.minute >= t.f AND m.minute < t.u AND m.minute >= :low AND m.minute < :high
    GROUP BY m.site, date_trunc('hour', m.minute, 'UTC')
    ON CONFLICT (site, hour) DO UPDATE SET
        people_in = excluded.people_in, people_out = excluded.people_out, inside = excluded.inside, peak = excluded.peak,
        corrected = excluded.corrected, complete = excluded.complete, updated_at = now()
    WHERE (o.people_in, o.people_out, o.inside, o.peak, o.corrected, o.complete)
          IS DISTINCT FROM (excluded.people_in, excluded.people_out, excluded.inside, excluded.peak, excluded.corrected, excluded.complete)
""")
# A site's day from the hours wholly inside it and the minutes at its edges
# (a day that starts on the hour has none): 24 rows, not 1,440.
_DAYS = text("""
    WITH t AS (
        SELECT * FROM unnest(CAST(:sites AS text[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]),
                             CAST(:inner_from AS timestamptz[]), CAST(:inner_to AS timestamptz[])) AS t(site, day, day_end, hf, hu)
    ),
    parts AS (
        SELECT t.site, t.day, h.hour AS at, h.people_in, h.people_out, h.inside, h.peak, h.corrected, h.complete
        FROM t JOIN site_hour_occupancy h ON h.site = t.site AND h.hour >= t.hf AND h.hour < t.hu AND h.hour >= :low AND h.hour < :high
        UNION ALL
        SELECT t.site, t.day, m.minute, m.people_in, m.people_out, m.inside, m.peak, m.corrected, m.complete
        FROM t JOIN site_minute_occupancy m ON m.site = t.site AND m.minute >= :low AND m.minute < :high
         AND (m.minute >= t.day AND m.minute < t.hf OR m.minute >= t.hu AND m.minute < t.day_end)
    )
    INSERT INTO site_day_occupancy AS o (site, day, people_in, people_out, inside, peak, corrected, complete)
    SELECT site, day, sum(people_in), sum(people_out), (array_agg(inside ORDER BY at DESC))[1], max(peak),
           (array_agg(corrected ORDER BY at DESC))[1], bool_and(complete)
    FROM parts GROUP BY site, day
    ON CONFLICT (site, day) DO UPDATE SET
        people_in = excluded.people_in, people_out = excluded.people_out, inside = excluded.inside, peak = excluded.peak,
        corrected = excluded.corrected, complete = excluded.complete, updated_at = now()
    WHERE (o.people_in, o.people_out, o.inside, o.peak, o.corrected, o.complete)
          IS DISTINCT FROM (excluded.people_in, excluded.people_out, excluded.inside, excluded.peak, excluded.corrected, excluded.complete)
""")


class SiteRefresh:
    """The site tables brought up to one batch of rows, in the batch's transaction.

    :meth:`read` runs before the rows are written (a geometry version whose
    definition is new to SQL names doors that were unknown: its site's days
    are counted again), :meth:`write` after them.
    """

    def __init__(self, rules: dict[str, SiteRule]) -> None:
        self.rules = rules
        self.lines: list[Row] = []
        self.statuses: list[Row] = []
        self.new_doors: list[Row] = []

    async def read(self, conn: AsyncConnection, tables: dict[str, list[Row]]) -> None:
        self.lines = [r for r in tables.get(LINE_MINUTE_CROSSINGS.name, ()) if r.values["object_class"] == PERSON]
        self.statuses = tables.get(CAMERA_STATUS.name, [])
        geometries = [r for r in tables.get(CAMERA_GEOMETRY.name, ()) if _doors(r.values.get("definition"))]
        self.new_doors = []
        if geometries:
            known = {(r.camera_id, r.geometry) for r in await conn.execute(_DEFINED, {
                "cameras": [r.values["camera_id"] for r in geometries], "geometries": [r.values["geometry"] for r in geometries],
            })}
            self.new_doors = [r for r in geometries if (r.values["camera_id"], r.values["geometry"]) not in known]

    async def write(self, conn: AsyncConnection) -> int:
        """Recount the site-days the batch changed, mark completeness, roll up; the site minutes written."""
        sites = sorted({r.values["site"] for r in (*self.lines, *self.new_doors, *self.statuses)})
        if not sites:
            return 0
        doors: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for entrance in await conn.execute(_ENTRANCES, {"sites": sites}):
            doors[entrance.site].add((entrance.camera_id, entrance.geometry, entrance.line))
        changed = [
            (r.values["site"], r.values["minute"]) for r in self.lines
            if (r.values["camera_id"], r.values["geometry"], r.values["line"]) in doors[r.values["site"]]
        ]
        for r in self.new_doors:  # every day the version was seen (the days are short of its crossings)
            first, last = r.values["first_seen"], r.values["last_seen"]
            changed += [(r.values["site"], t) for t in range(max(first, last - KEPT_DAYS * DAY_MS), last, DAY_MS)]
            changed.append((r.values["site"], last))
        door_cameras = {(site, camera) for site, entries in doors.items() for camera, _, _ in entries}
        watched = sorted(
            {site for site, _ in changed} | {r.values["site"] for r in self.statuses if (r.values["site"], r.values["camera_id"]) in door_cameras}
        )
        if not watched:
            return 0
        await conn.execute(_LOCK, {"sites": watched})
        dark = {r.site: r.dark_from for r in await conn.execute(_DARK_FROM, {"sites": watched, "behind": CATCHING_UP_S})}
        days = site_days(((site, minute - minute % MINUTE_MS) for site, minute in changed), self.rules)
        written: list[tuple[str, datetime]] = []
        if days:
            written += [(r.site, r.minute) for r in await conn.execute(_MINUTES, {
                "sites": [d.site for d in days], "starts": [from_ms(d.start) for d in days], "ends": [from_ms(d.end) for d in days],
                "sinces": [from_ms(d.since) for d in days], "darks": [dark.get(d.site) for d in days], "person": PERSON,
                # Plain bounds as well: the planner prunes partitions by these, not by the arrays' values.
                "low": from_ms(min(d.since for d in days)), "high": from_ms(max(d.end for d in days)),
                "first_day": from_ms(min(d.start for d in days)),
            })]
        darks = [dark.get(s) for s in watched]
        written += [(r.site, r.minute) for r in await conn.execute(_COMPLETE, {
            "sites": watched, "darks": darks, "darkest": min((d for d in darks if d is not None), default=_NEVER),
        })]
        await self._roll_up(conn, written)
        return len(written)

    async def _roll_up(self, conn: AsyncConnection, written: list[tuple[str, datetime]]) -> None:
        """The hours and the site-days that hold ``written`` minutes: hours from their minutes, then days from them."""
        hours: dict[str, tuple[int, int]] = {}
        days: set[tuple[str, int, int]] = set()
        for site, minute in written:
            ms = to_ms(minute)
            hour = ms - ms % HOUR_MS
            low, high = hours.get(site, (hour, hour + HOUR_MS))
            hours[site] = (min(low, hour), max(high, hour + HOUR_MS))
            days.add((site, *rule_of(self.rules, site).day_of(ms)))
        if not hours:
            return
        sites = sorted(hours)
        await conn.execute(_HOURS, {
            "sites": sites, "froms": [from_ms(hours[s][0]) for s in sites], "tos": [from_ms(hours[s][1]) for s in sites],
            "low": from_ms(min(hours[s][0] for s in sites)), "high": from_ms(max(hours[s][1] for s in sites)),
        })
        spans = sorted(days)
        inner = [(start + (-start) % HOUR_MS, end - end % HOUR_MS) for _, start, end in spans]
        await conn.execute(_DAYS, {
            "sites": [s for s, _, _ in spans], "starts": [from_ms(a) for _, a, _ in spans], "ends": [from_ms(b) for _, _, b in spans],
            "inner_from": [from_ms(f) for f, _ in inner], "inner_to": [from_ms(u) for _, u in inner],
            "low": from_ms(min(a for _, a, _ in spans)), "high": from_ms(max(b for _, _, b in spans)),
        })


# A new door's crossings are counted again this far back at most (the minute tables' default retention).
KEPT_DAYS = RETENTION_DEFAULTS["minute"]


def _doors(definition: Any) -> bool:
    return isinstance(definition, dict) and any(isinstance(line, dict) and line.get("entrance") for line in definition.get("lines", ()))


# --- fleetsight audit: the site minutes against their doors' crossings -------------------

_DOOR_FLOWS = text("""
    SELECT e.site, l.minute,
           sum(CASE WHEN e.direction = 'in' THEN l.crossings_in ELSE l.crossings_out END) AS people_in,
           sum(CASE WHEN e.direction = 'in' THEN l.crossings_out ELSE l.crossings_in END) AS people_out
    FROM site_entrances e
    JOIN line_minute_crossings l
      ON l.camera_id = e.camera_id AND l.geometry = e.geometry AND l.line = e.line AND l.object_class = :person AND l.minute >= :since
    GROUP BY e.site, l.minute
""")
_SITE_MINUTES = text("SELECT site, minute, people_in, people_out, inside FROM site_minute_occupancy WHERE minute >= :since")


@dataclass(frozen=True)
class SiteMismatch:
    site: str
    minute: int
    sql: tuple[int, int, int] | None  # people in, out, inside as SQL holds them (None: no row)
    doors: tuple[int, int, int] | None  # as the doors' crossings give them (None: no crossing)


def recount(flows: dict[int, tuple[int, int]], rule: SiteRule) -> dict[int, tuple[int, int, int]]:
    """A site's minutes (in, out, inside) from its doors' crossings per minute, each day from zero, inside never below it."""
    out: dict[int, tuple[int, int, int]] = {}
    inside, day = 0, None
    for minute in sorted(flows):
        if rule.day_of(minute) != day:
            day, inside = rule.day_of(minute), 0
        people_in, people_out = flows[minute]
        inside = max(0, inside + people_in - people_out)
        out[minute] = (people_in, people_out, inside)
    return out


async def check_sites(conn: AsyncConnection, since_ms: int, rules: dict[str, SiteRule]) -> tuple[int, list[SiteMismatch]]:
    """Every site minute from ``since_ms`` on against its doors' crossings: (minutes checked, those that differ).

    The sink writes both in one transaction, so read in one snapshot they
    agree exactly: nothing is pending. Whole site-days are read (a minute's
    inside depends on the day before it).
    """
    start = min((rule_of(rules, s).day_of(since_ms)[0] for s in [*rules, ""]), default=since_ms)
    flows: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for r in await conn.execute(_DOOR_FLOWS, {"since": from_ms(start), "person": PERSON}):
        flows[r.site][to_ms(r.minute)] = (int(r.people_in), int(r.people_out))
    held: dict[str, dict[int, tuple[int, int, int]]] = defaultdict(dict)
    for r in await conn.execute(_SITE_MINUTES, {"since": from_ms(start)}):
        held[r.site][to_ms(r.minute)] = (int(r.people_in), int(r.people_out), int(r.inside))
    checked, bad = 0, []
    for site in sorted(set(flows) | set(held)):
        rule = rule_of(rules, site)
        site_start = rule.day_of(since_ms)[0]
        want = {m: v for m, v in recount({m: f for m, f in flows[site].items() if m >= site_start}, rule).items() if m >= since_ms}
        have = {m: v for m, v in held[site].items() if m >= since_ms}
        for minute in sorted(set(want) | set(have)):
            checked += 1
            if want.get(minute) != have.get(minute):
                bad.append(SiteMismatch(site, minute, have.get(minute), want.get(minute)))
    return checked, bad


_SAVE_RULES = text("""
    INSERT INTO site_rules (site, time_zone, day_starts, capacity, capacity_for_s)
    SELECT * FROM unnest(CAST(:sites AS text[]), CAST(:zones AS text[]), CAST(:starts AS time[]), CAST(:capacities AS integer[]),
                         CAST(:durations AS float8[]))
    ON CONFLICT (site) DO UPDATE SET time_zone = excluded.time_zone, day_starts = excluded.day_starts, capacity = excluded.capacity,
        capacity_for_s = excluded.capacity_for_s, updated_at = now()
    WHERE (site_rules.time_zone, site_rules.day_starts, site_rules.capacity, site_rules.capacity_for_s)
          IS DISTINCT FROM (excluded.time_zone, excluded.day_starts, excluded.capacity, excluded.capacity_for_s)
""")


async def save_rules(conn: AsyncConnection, rules: dict[str, SiteRule]) -> None:
    """The sites' rules where SQL can read them (``site_occupancy_now`` starts each site's day by them)."""
    sites = sorted(rules)
    if sites:
        await conn.execute(_SAVE_RULES, {
            "sites": sites, "zones": [rules[s].time_zone for s in sites], "starts": [rules[s].day_starts for s in sites],
            "capacities": [rules[s].capacity for s in sites], "durations": [rules[s].capacity_for_s for s in sites],
        })
