"""``python -m devtools demo``: the whole product on one machine, on real video.

Starts the local services, migrates the database, runs the bridge, a stream
worker and the sink, then three camera nodes (each its own process, as on a
real edge box) on the sample clip ``vtest.avi`` (a plaza seen from above)
with lines and zones drawn on it. A live view follows frames, events, the
outboxes and the SQL totals. When the clip ends and the outboxes are drained
it checks that PostgreSQL holds exactly what the cameras recorded, prints
the SQL results and writes a self-contained HTML report. The services stay
up so you can keep querying; ``make services-down`` stops them.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from devtools import truth
from devtools.processes import COMPONENTS, spawn, stop, wait_bridge_online
from devtools.services import ServiceError, Services
from devtools.truth import Truth
from edge.outbox import Outbox
from fleetsight import report
from fleetsight.mqtt_users import ensure_user
from runtime.settings import REPO_ROOT, Settings
from runtime.waiting import WaitTimeout, wait_for
from schemas.codec import Event

log = logging.getLogger("devtools.demo")

SITE = "plaza"
# Drawn on vtest.avi; coordinates are fractions of the frame.
CAMERAS: list[dict[str, Any]] = [
    {"camera_id": "plaza-north",
     # The plaza's entrance: walking "in" over it enters the site (README, "People inside a site").
     "lines": [{"name": "crosswalk", "points": [[0.05, 0.55], [0.95, 0.55]], "entrance": "in"}],
     "zones": [{"name": "benches", "polygon": [[0.55, 0.10], [0.98, 0.10], [0.98, 0.50], [0.55, 0.50]]}]},
    {"camera_id": "plaza-west",
     "lines": [{"name": "west-path", "points": [[0.35, 0.05], [0.35, 0.95]]}],
     "zones": [{"name": "west-walk", "polygon": [[0.0, 0.0], [0.45, 0.0], [0.45, 1.0], [0.0, 1.0]]}]},
    {"camera_id": "plaza-east",
     "lines": [{"name": "east-path", "points": [[0.65, 0.05], [0.65, 0.95]]}],
     "zones": [{"name": "fountain", "polygon": [[0.35, 0.35], [0.70, 0.35], [0.70, 0.80], [0.35, 0.80]]}]},
]


@dataclass
class DemoOptions:
    cameras: int = 3
    loops: int = 1  # times through the clip
    max_frames: int | None = None  # per camera; None: the loops decide
    realtime: bool = True  # at the clip's own 10 fps, as a camera delivers it
    report: Path = Path("demo-report.html")
    workdir: Path | None = None  # default: <services_dir>/demo
    metrics_port_base: int = 9110


def sample_video(settings: Settings) -> Path:
    """The sample clip, fetched from Debian's opencv-doc package at set-up time if missing."""
    media = settings.services_dir / "media"
    if not (media / "vtest.avi").exists():
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "fetch-media.sh"), str(media)], check=True)
    return media / "vtest.avi"


def write_camera_configs(settings: Settings, options: DemoOptions, workdir: Path) -> list[Path]:
    """One YAML file per camera, as an operator would write them."""
    video = sample_video(settings)
    paths = []
    for i, camera in enumerate(CAMERAS[: options.cameras]):
        config = {
            "camera_id": camera["camera_id"], "site": SITE,
            "source": {"uri": str(video), "loop": options.loops > 1, "realtime": options.realtime},
            "model": {"threads": 1},
            "lines": camera["lines"], "zones": camera["zones"],
            "occupancy_interval_s": 5, "health_interval_s": 10,
            # Confirmed events stay in the outbox, so the demo can check SQL against them.
            "outbox": {"path": f"outbox-{camera['camera_id']}.sqlite3", "keep_confirmed": True},
            "metrics_port": options.metrics_port_base + i,
        }
        path = workdir / "cameras" / f"{camera['camera_id']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Written by `python -m devtools demo`.\n{yaml.safe_dump(config, sort_keys=False)}")
        paths.append(path)
    return paths


def _outbox(workdir: Path, camera_id: str) -> Outbox:
    return Outbox(workdir / "cameras" / f"outbox-{camera_id}.sqlite3", camera_id, SITE, keep_confirmed=True)


def recorded(workdir: Path, camera_id: str, after_seq: int) -> list[Event]:
    """What a camera stored since ``after_seq``: the ground truth SQL must match."""
    outbox = _outbox(workdir, camera_id)
    try:
        return [e for e in outbox.all_events() if e.seq > after_seq]
    finally:
        outbox.close()


def last_seq(workdir: Path, camera_id: str) -> int:
    if not (workdir / "cameras" / f"outbox-{camera_id}.sqlite3").exists():
        return 0
    outbox = _outbox(workdir, camera_id)
    try:
        return outbox.last_seq()
    finally:
        outbox.close()


def scrape(port: int) -> dict[str, float]:
    """A node's Prometheus metrics, summed by name (the live view reads what Prometheus would)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except (OSError, http.client.HTTPException):
        # Not up yet, or gone: a node that ended its frames exits, and one
        # exiting mid-answer cuts the body short (seen: IncompleteRead in CI).
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_depth", "_up")) or sample.name == "fleetsight_edge_inference_seconds_count":
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


class LiveView:
    """Per-camera progress from the nodes' metrics, and the SQL totals."""

    def __init__(self, console: Console, cameras: list[str], ports: list[int], frames_each: int) -> None:
        self.console = console
        self.cameras = cameras
        self.ports = ports
        self.frames_each = frames_each
        self.sql_total = 0
        self._last_log = 0.0

    def table(self, procs: dict[str, subprocess.Popen]) -> Table:
        table = Table(title=f"FleetSight demo: {len(self.cameras)} cameras on vtest.avi, site {SITE}")
        for column in ("camera", "frames", "detector runs", "events", "outbox", "link", "process"):
            table.add_column(column, justify="right" if column not in ("camera", "link", "process") else "left")
        for camera, port in zip(self.cameras, self.ports):
            m = scrape(port)
            frames = int(m.get("fleetsight_edge_frames_total", 0))
            proc = procs[camera]
            state = "running" if proc.poll() is None else ("done" if proc.returncode == 0 else f"[red]exit {proc.returncode}[/]")
            link = "-" if not m else ("[green]up[/]" if m.get("fleetsight_edge_link_up") else "[red]down[/]")
            table.add_row(
                camera, f"{frames}/{self.frames_each} ({100 * frames / max(1, self.frames_each):.0f}%)",
                str(int(m.get("fleetsight_edge_inference_seconds_count", 0))), str(int(m.get("fleetsight_edge_events_total", 0))),
                str(int(m.get("fleetsight_edge_outbox_depth", 0))), link, state,
            )
        table.caption = f"objects and crossings in PostgreSQL so far: {self.sql_total}"
        return table

    def log_line(self, procs: dict[str, subprocess.Popen]) -> None:
        """Without a terminal: a plain line every 10 s."""
        if time.monotonic() - self._last_log < 10:
            return
        self._last_log = time.monotonic()
        parts = [f"{c} {int(scrape(p).get('fleetsight_edge_frames_total', 0))}/{self.frames_each} frames" for c, p in zip(self.cameras, self.ports)]
        self.console.print("demo: " + ", ".join(parts) + f"; in SQL: {self.sql_total}")


def run_demo(settings: Settings, options: DemoOptions | None = None) -> int:
    """Run the demo; 0 when SQL matches what the cameras recorded and the report is written."""
    options = options or DemoOptions()
    console = Console(stderr=True)
    from sinks.db import upgrade

    try:
        with console.status("starting Mosquitto, Kafka and PostgreSQL ..."):
            Services(settings).up()
    except ServiceError as exc:
        console.print(f"[red]could not start the local services:[/] {exc}")
        return 1
    upgrade(settings.database_url)
    workdir = options.workdir or settings.services_dir / "demo"
    debug_dir = workdir / "frames"
    shutil.rmtree(debug_dir, ignore_errors=True)
    with console.status("fetching the sample video (once) ..."):
        configs = write_camera_configs(settings, options, workdir)
    cameras = [c["camera_id"] for c in CAMERAS[: options.cameras]]
    for camera in cameras:
        ensure_user(settings, camera, camera=True)  # each camera logs in as itself
    start_seq = {c: last_seq(workdir, c) for c in cameras}
    # The report covers this run: from the start of its first minute.
    since = datetime.now(UTC).replace(second=0, microsecond=0)
    dsn = settings.postgres_dsn
    before = asyncio.run(truth.in_sql_once(dsn, cameras))

    logs = workdir / "logs"
    procs = [spawn(c, settings, logs / f"{c}.log") for c in COMPONENTS]
    nodes: dict[str, subprocess.Popen] = {}
    try:
        with console.status("starting the bridge, stream worker and sink ..."):
            if not wait_bridge_online(settings, 60):
                console.print(f"[red]the bridge did not come online; see {logs / 'bridge.log'}[/]")
                return 1
        frames_each = options.max_frames or 795 * options.loops
        args = ["--debug-dir", str(debug_dir), "--drain-timeout", "120", "--max-frames", str(frames_each)]
        for camera, config in zip(cameras, configs):
            nodes[camera] = spawn("edge run", settings, logs / f"{camera}.log", ["--config", str(config), *args])
        view = LiveView(console, cameras, [options.metrics_port_base + i for i in range(len(cameras))], frames_each)
        asyncio.run(_follow(view, nodes, dsn, before))
        failed = {c: p.returncode for c, p in nodes.items() if p.returncode != 0}
        if failed:
            console.print(f"[red]camera nodes failed: {failed}; logs in {logs}[/]")
            return 1

        record = {c: recorded(workdir, c, start_seq[c]) for c in cameras}
        expected = truth.expected([e for events in record.values() for e in events])
        ok = asyncio.run(_wait_exact(dsn, cameras, before, expected, console))
        _print_results(console, dsn, cameras, since)
        frames = {c: f for c in cameras if (f := report.latest_frame(debug_dir, c)) is not None}
        notes = f"{sum(len(v) for v in record.values())} events from {len(cameras)} edge nodes; SQL {'matches' if ok else 'does NOT match'} the edges' own record."
        path = asyncio.run(report.write_report(dsn, cameras, frames, options.report, notes, since))
        n_objects = sum(truth.objects_per_minute(expected).values())
        n_crossings = _objects_and_crossings(expected) - n_objects
        if ok:
            console.print(f"[green]PostgreSQL holds exactly what the {len(cameras)} cameras recorded: "
                          f"{n_objects} objects, {n_crossings} line crossings.[/]")
        else:
            console.print(f"[red]SQL did not match the cameras' record in time; logs are in {logs}[/]")
        console.print(f"Report: [bold]{path.resolve()}[/] (open it in a browser; it is one self-contained file)")
        console.print(
            "\nQuery it yourself:\n"
            f"  psql {dsn} -c 'SELECT * FROM line_minute_crossings ORDER BY minute DESC LIMIT 20'\n"
            f"  psql {dsn} -c 'SELECT * FROM site_occupancy_now'\n"
            "Stop the services with: make services-down"
        )
        return 0 if ok else 1
    finally:
        stop(list(nodes.values()) + procs)


# What the live view shows: it reads only these tables twice a second.
SHOWN = tuple(t for t in truth.TABLES if t.name in ("camera_minute_counts", "line_minute_crossings"))


def _objects_and_crossings(counts: Truth) -> int:
    return sum(n for key, n in counts.items() if key[-1] == "objects" or key[0] == "line_minute_crossings")


async def _follow(view: LiveView, nodes: dict[str, subprocess.Popen], dsn: str, before: Truth) -> None:
    """Show progress until every node has finished (its clip played and its outbox drained):
    a live table on a terminal, a line every 10 s otherwise."""
    conn = await asyncpg.connect(dsn)
    live = Live(Group(view.table(nodes)), console=view.console, refresh_per_second=2) if view.console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            running = any(p.poll() is None for p in nodes.values())
            view.sql_total = _objects_and_crossings(truth.since(await truth.in_sql(conn, view.cameras, SHOWN), before))
            if live is not None:
                live.update(Group(view.table(nodes)))
            else:
                view.log_line(nodes)
            if not running:
                return
            await asyncio.sleep(0.5)  # refresh period of the view
    finally:
        if live is not None:
            live.stop()
        await conn.close()


async def _wait_exact(dsn: str, cameras: list[str], before: Truth, expected: Truth, console: Console, timeout: float = 120.0) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        with console.status("waiting for the stream worker and sink to catch up ..."):
            async def exact() -> bool:
                return truth.since(await truth.in_sql(conn, cameras), before) == expected

            await wait_for(exact, timeout, "SQL to equal the cameras' record", interval=0.5)
            return True
    except WaitTimeout:
        return False
    finally:
        await conn.close()


def _print_results(console: Console, dsn: str, cameras: list[str], since: datetime) -> None:
    data = asyncio.run(report.fetch(dsn, cameras, since))
    for name in ("objects by class", "line crossings", "people inside the site per minute", "camera status"):
        rows = data.rows[name]
        sql = report.QUERIES[name].strip()
        params = f"$1 = {cameras}" + (f", $2 = '{since:%Y-%m-%d %H:%M}+00'" if "$2" in sql else "")
        console.print(f"\n[bold]{name}[/]\n[dim]{sql}[/]  [dim](with {params})[/]")
        if not rows:
            console.print("(no rows)")
            continue
        table = Table()
        for column in rows[0].keys():
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else f"{v:%Y-%m-%d %H:%M:%S}" if hasattr(v, "strftime") else str(v) for v in row.values()))
        Console().print(table)
