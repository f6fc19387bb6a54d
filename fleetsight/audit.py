"""``fleetsight audit``: does SQL hold what each camera recorded? Checked now, read-only.

Runs the reconciler's check (``sinks/reconcile.py``) over the minutes asked
for, whatever the reconciler last wrote, so a row changed or deleted since
is caught too; exits 1 when any minute does not match.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from runtime.settings import SinkSettings
from sinks.db import make_engine
from sinks.reconcile import EDGE_DROPPED, MATCH, MISMATCH, PENDING, Verdict, check, check_rollups, judge, rollup_state

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


async def audit(settings: SinkSettings, since_ms: int, camera: str | None, console: Console) -> int:
    """Print the state per camera (and each mismatched minute); 1 if any minute mismatches."""
    engine = make_engine(settings.database_url)
    now = int(time.time() * 1000)
    try:
        async with engine.connect() as conn:
            grace = int(settings.reconcile_grace_s * 1000)
            verdicts = [judge(c, now, grace) for c in await check(conn, since_ms, camera)]
            rollups_checked, rollups = await check_rollups(conn, since_ms, camera, now, count=True)
            clocks = {
                r.camera_id: r.clock_offset_s
                for r in await conn.execute(text("SELECT camera_id, clock_offset_s FROM camera_status"))
            }
    finally:
        await engine.dispose()
    cameras = summarize(verdicts, clocks)
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
    table = Table(title=f"Reconciliation since {since:%Y-%m-%d %H:%M} UTC ({len(verdicts)} camera-minutes)")
    for column in ("camera", "site", MATCH, EDGE_DROPPED, PENDING, MISMATCH, "last match (UTC)", "clock", "skewed min"):
        table.add_column(column, justify="left" if column in ("camera", "site") else "right", no_wrap=True)
    for cam in cameras:
        last = f"{datetime.fromtimestamp(cam.last_match / 1000, tz=UTC):%m-%d %H:%M}" if cam.last_match else "-"
        clock = "-" if cam.clock_offset_s is None else f"{cam.clock_offset_s:+.1f} s"
        bad = cam.states[MISMATCH]
        table.add_row(
            cam.camera_id, cam.site, str(cam.states[MATCH]), str(cam.states[EDGE_DROPPED]), str(cam.states[PENDING]),
            f"[bold red]{bad}[/]" if bad else "0", last, clock, f"[yellow]{cam.clock_suspect}[/]" if cam.clock_suspect else "0",
        )
    console.print(table)
    if any(cam.clock_suspect for cam in cameras):
        console.print("[yellow]skewed min[/]: minutes a clock_skew alert covered; they count where the camera's clock put them")
    mismatched = [v for v in verdicts if v.state == MISMATCH]
    for v in mismatched[:SHOWN_MISMATCHES]:
        differs = ", ".join(f"{k} edge {d['edge']} cloud {d['cloud']}" for k, d in v.differences.items() if k != "seqs")
        console.print(f"[red]mismatch[/] {v.camera_id} {datetime.fromtimestamp(v.minute / 1000, tz=UTC):%Y-%m-%d %H:%M}: {differs}")
    if len(mismatched) > SHOWN_MISMATCHES:
        console.print(f"... and {len(mismatched) - SHOWN_MISMATCHES} more (SELECT * FROM camera_minute_reconciliation WHERE state = 'mismatch')")
    if not verdicts:
        console.print("no camera-minutes in that span")
    rollups_bad = [c for c in rollups if rollup_state(c, now, grace) == MISMATCH]
    console.print(
        f"hours against their minutes, days against their hours: {rollups_checked} rows checked, "
        f"{len(rollups) - len(rollups_bad)} pending, " + (f"[bold red]{len(rollups_bad)} differ[/]" if rollups_bad else "0 differ")
    )
    for c in rollups_bad[:SHOWN_MISMATCHES]:
        differs = ", ".join(f"{k} summed {d['summed']} rollup {d['rollup']}" for k, d in c.differences.items())
        console.print(f"[red]mismatch[/] {c.table} {c.camera_id} {c.key} {datetime.fromtimestamp(c.period / 1000, tz=UTC):%Y-%m-%d %H:%M}: {differs}")
    return 1 if mismatched or rollups_bad else 0


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
