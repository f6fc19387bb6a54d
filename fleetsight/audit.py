"""``fleetsight audit``: does SQL hold what each camera recorded? Checked now, read-only.

Runs the reconciler's check (``sinks/reconcile.py``) over the minutes asked
for, whatever the reconciler last wrote, so a row changed or deleted since
is caught too; exits 1 when any minute does not match.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from sqlalchemy import text

from runtime.settings import SinkSettings
from sinks.db import make_engine
from sinks.reconcile import EDGE_DROPPED, MATCH, MISMATCH, PENDING, Verdict, check, check_rollups, judge, rollup_state
from sinks.site_occupancy import SiteMismatch, check_sites

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SHOWN_MISMATCHES = 20


def parse_since(value: str, now: float | None = None) -> int:
    """``2h``, ``30m``, ``7d`` (ago) or an ISO 8601 time; ms since the epoch."""
    now = time.time() if now is None else now
    span = _SPAN.match(value.strip())
    if span:
        return int((now - float(span[1]) * _SECONDS[span[2]]) * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: {value!r} is neither a span like 2h, 30m, 7d nor an ISO time like 2026-11-28T09:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass
class CameraAudit:
    camera_id: str
    site: str
    states: Counter
    last_match: int | None
    clock_offset_s: float | None
    clock_suspect: int


# (header, second header line, right-aligned): short enough that the table fits 80 columns
COLUMNS = (
    ("camera", "", False), ("site", "", False), ("match", "", True), ("edge", "dropped", True), ("pending", "", True),
    ("mismatch", "", True), ("last match", "(UTC)", True), ("clock", "", True), ("skewed", "min", True),
)


def render_table(rows: list[list[str]], width: int) -> list[str]:
    """Plain text lines of the per-camera table that fit ``width`` columns: one line a camera when
    it fits, else the camera and site on a line of their own and the figures under them.
    (rich's table cut every header to one letter and an ellipsis on an 80-column pipe.)"""

    def lay(columns: tuple, cells: list[list[str]], indent: str = "") -> tuple[list[str], list[str]]:
        widths = [max([len(h), len(h2), *(len(r[i]) for r in cells)]) for i, (h, h2, _) in enumerate(columns)]

        # Two spaces after a name, one between right-aligned figures (their headers keep them apart).
        seps = ["  " if not right else " " for _, _, right in columns[:-1]]

        def line(values: list[str]) -> str:
            cells_ = [v.rjust(w) if right else v.ljust(w) for v, w, (_, _, right) in zip(values, widths, columns)]
            return (indent + "".join(c + sep for c, sep in zip(cells_, seps)) + cells_[-1]).rstrip()

        head = [line([h for h, _, _ in columns])] + ([line([h2 for _, h2, _ in columns])] if any(h2 for _, h2, _ in columns) else [])
        return head + [indent + "-" * (sum(widths) + sum(map(len, seps)))], [line(r) for r in cells]

    head, body = lay(COLUMNS, rows)
    if max(len(x) for x in head + body) <= width:
        return head + body
    head, body = lay(COLUMNS[2:], [r[2:] for r in rows], indent="  ")
    return ["camera (site)", *head] + [line for r, figures in zip(rows, body) for line in (f"{r[0]} ({r[1]})", figures)]


async def audit(settings: SinkSettings, since_ms: int, camera: str | None, console: Console, output: str = "table") -> int:
    """Print the state per camera (and each mismatched minute) as a table, JSON or CSV; 1 if any minute mismatches."""
    engine = make_engine(settings.database_url)
    now = int(time.time() * 1000)
    try:
        # One snapshot: the sink writes a site's minutes with its doors' rows, so they are compared as one.
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            grace = int(settings.reconcile_grace_s * 1000)
            verdicts = [judge(c, now, grace) for c in await check(conn, since_ms, camera)]
            rollups_checked, rollups = await check_rollups(conn, since_ms, camera, now, count=True)
            clocks = {
                r.camera_id: r.clock_offset_s
                for r in await conn.execute(text("SELECT camera_id, clock_offset_s FROM camera_status"))
            }
            sites_checked, sites_bad = await check_sites(conn, since_ms, settings.sites)
    finally:
        await engine.dispose()
    cameras = summarize(verdicts, clocks)
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
    mismatched = [v for v in verdicts if v.state == MISMATCH]
    rollups_bad = [c for c in rollups if rollup_state(c, now, grace) == MISMATCH]
    failed = 1 if mismatched or rollups_bad or sites_bad else 0
    if output != "table":
        console.file.write(machine_readable(
            output, since, cameras, mismatched, rollups_checked, len(rollups) - len(rollups_bad), rollups_bad, sites_checked, sites_bad,
        ))
        return failed
    console.print(f"Reconciliation since {since:%Y-%m-%d %H:%M} UTC ({len(verdicts)} camera-minutes)", highlight=False)
    rows = []
    for cam in cameras:
        last = f"{datetime.fromtimestamp(cam.last_match / 1000, tz=UTC):%m-%d %H:%M}" if cam.last_match else "-"
        clock = "-" if cam.clock_offset_s is None else f"{cam.clock_offset_s:+.1f} s"
        rows.append([cam.camera_id, cam.site, str(cam.states[MATCH]), str(cam.states[EDGE_DROPPED]), str(cam.states[PENDING]),
                     str(cam.states[MISMATCH]), last, clock, str(cam.clock_suspect)])
    if rows:
        for line in render_table(rows, console.width):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    for v in mismatched[:SHOWN_MISMATCHES]:
        differs = ", ".join(f"{k} edge {d['edge']} cloud {d['cloud']}" for k, d in v.differences.items() if k != "seqs")
        console.print(f"[red]mismatch[/] {v.camera_id} {datetime.fromtimestamp(v.minute / 1000, tz=UTC):%Y-%m-%d %H:%M}: {differs}")
    if len(mismatched) > SHOWN_MISMATCHES:
        console.print(f"... and {len(mismatched) - SHOWN_MISMATCHES} more (SELECT * FROM camera_minute_reconciliation WHERE state = 'mismatch')")
    if not verdicts:
        console.print("no camera-minutes in that span")
    console.print(
        f"hours against their minutes, days against their hours: {rollups_checked} rows checked, "
        f"{len(rollups) - len(rollups_bad)} pending, " + (f"[bold red]{len(rollups_bad)} differ[/]" if rollups_bad else "0 differ")
    )
    for c in rollups_bad[:SHOWN_MISMATCHES]:
        differs = ", ".join(f"{k} summed {d['summed']} rollup {d['rollup']}" for k, d in c.differences.items())
        console.print(f"[red]mismatch[/] {c.table} {c.camera_id} {c.key} {datetime.fromtimestamp(c.period / 1000, tz=UTC):%Y-%m-%d %H:%M}: {differs}")
    console.print(
        f"site minutes against their doors' crossings: {sites_checked} checked, "
        + (f"[bold red]{len(sites_bad)} differ[/]" if sites_bad else "0 differ")
    )
    for m in sites_bad[:SHOWN_MISMATCHES]:
        console.print(f"[red]mismatch[/] site {m.site} {datetime.fromtimestamp(m.minute / 1000, tz=UTC):%Y-%m-%d %H:%M}: "
                      f"in, out, inside: SQL {m.sql or 'no row'}, the doors {m.doors or 'no crossing'}")
    return failed


def machine_readable(
    output: str, since: datetime, cameras: list[CameraAudit], mismatched: list[Verdict], rollups_checked: int, rollups_pending: int,
    rollups_bad: list, sites_checked: int = 0, sites_bad: list[SiteMismatch] | None = None,
) -> str:
    """The audit for scripts: ``json`` (everything) or ``csv`` (one row per camera)."""
    def iso(ms: int | None) -> str | None:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat() if ms else None

    per_camera = [
        {"camera_id": c.camera_id, "site": c.site, MATCH: c.states[MATCH], EDGE_DROPPED: c.states[EDGE_DROPPED],
         PENDING: c.states[PENDING], MISMATCH: c.states[MISMATCH], "last_match": iso(c.last_match),
         "clock_offset_s": c.clock_offset_s, "clock_suspect_minutes": c.clock_suspect}
        for c in cameras
    ]
    if output == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(per_camera[0]) if per_camera else ["camera_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(per_camera)
        return out.getvalue()
    return json.dumps({
        "since": since.isoformat(), "cameras": per_camera,
        "mismatches": [{"camera_id": v.camera_id, "minute": iso(v.minute), "differences": v.differences} for v in mismatched],
        "rollups": {"checked": rollups_checked, "pending": rollups_pending, "differ": [
            {"table": c.table, "camera_id": c.camera_id, "key": c.key, "period": iso(c.period), "differences": c.differences}
            for c in rollups_bad]},
        "sites": {"checked": sites_checked, "differ": [
            {"site": m.site, "minute": iso(m.minute), "sql": m.sql, "doors": m.doors} for m in sites_bad or []]},
    }, indent=2, default=str) + "\n"


def summarize(verdicts: list[Verdict], clocks: dict[str, float | None]) -> list[CameraAudit]:
    """One line per camera."""
    by_camera: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_camera[v.camera_id].append(v)
    out = []
    for camera_id, items in sorted(by_camera.items()):
        matched = [v.minute for v in items if v.state == MATCH]
        out.append(CameraAudit(
            camera_id, items[0].site, Counter(v.state for v in items), max(matched) if matched else None,
            clocks.get(camera_id), sum(v.clock_suspect for v in items),
        ))
    return out
