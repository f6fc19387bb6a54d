"""``fleetsight demo``: the whole pipeline on one machine, then the SQL result.

Starts the local services, migrates the database, runs the bridge, a stream
worker and the sink, drives a simulated fleet, waits until PostgreSQL holds
exactly what the cameras produced, and prints it. The services stay up so
you can keep querying; ``fleetsight services down`` stops them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter

from rich.console import Console
from rich.table import Table

from edge.simulate import SimulatorConfig, run_simulator
from fleetsight.processes import COMPONENTS, spawn, stop, wait_bridge_online
from fleetsight.services import ServiceError, Services
from fleetsight.settings import Settings

log = logging.getLogger("fleetsight.demo")

CAMERA_PREFIX = "demo-cam"

_COUNTS_SQL = """
SELECT camera_id, object_class, (extract(epoch FROM minute) * 1000)::bigint AS minute, objects
FROM camera_minute_counts WHERE camera_id LIKE $1
"""

SUMMARY_SQL = """
SELECT camera_id, object_class, sum(objects) AS objects, min(minute) AS first_minute, max(minute) AS last_minute
FROM camera_minute_counts
WHERE camera_id LIKE 'demo-cam-%'
GROUP BY camera_id, object_class
ORDER BY camera_id, objects DESC
"""


async def _counts(dsn: str) -> Counter:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_COUNTS_SQL, f"{CAMERA_PREFIX}-%")
    finally:
        await conn.close()
    return Counter({(r["camera_id"], r["object_class"], r["minute"]): r["objects"] for r in rows})


def _dsn(settings: Settings) -> str:
    return settings.database_dsn.replace("postgresql+asyncpg://", "postgresql://")


def run_demo(settings: Settings, duration_s: float = 60.0, cameras: int = 3) -> int:
    """Run the demo; 0 when SQL matches what the simulated cameras produced."""
    console = Console(stderr=True)
    from sinks.db import upgrade

    try:
        with console.status("starting Mosquitto, Kafka and PostgreSQL ..."):
            Services(settings).up()
    except ServiceError as exc:
        console.print(f"[red]could not start the local services:[/] {exc}")
        return 1
    upgrade(settings.database_dsn)
    logs = settings.services_dir / "demo"
    procs = [spawn(c, settings, logs / f"{c}.log") for c in COMPONENTS]
    try:
        with console.status("starting the bridge, stream worker and sink ..."):
            if not wait_bridge_online(settings, 60):
                console.print(f"[red]the bridge did not come online; see {logs / 'bridge.log'}[/]")
                return 1
        before = asyncio.run(_counts(_dsn(settings)))
        console.print(f"[bold]Simulating {cameras} cameras for {duration_s:.0f} s[/] (events -> MQTT -> Kafka -> Faust -> PostgreSQL)")
        config = SimulatorConfig(
            cameras=cameras, duration_s=duration_s, rate=5.0, site="demo-shop",
            camera_prefix=CAMERA_PREFIX, outbox_dir=settings.services_dir / "edge-sim",
        )
        report = asyncio.run(run_simulator(settings, config, progress=sys.stderr.isatty()))
        console.print(report.summary())
        ok = asyncio.run(_wait_exact(settings, before, report.expected, console))
        _print_summary(settings)
        if ok:
            console.print("[green]PostgreSQL holds exactly the objects the cameras saw.[/]")
        else:
            console.print(f"[red]SQL did not match the cameras' ground truth in time; logs are in {logs}[/]")
        console.print(
            "\nQuery it yourself:\n"
            f"  psql {_dsn(settings)} -c 'SELECT * FROM camera_minute_counts ORDER BY minute DESC LIMIT 20'\n"
            "Stop the services with: make services-down"
        )
        return 0 if ok and report.drained else 1
    finally:
        stop(procs)


async def _wait_exact(settings: Settings, before: Counter, expected: Counter, console: Console, timeout: float = 120.0) -> bool:
    dsn = _dsn(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with console.status("waiting for the stream worker and sink to catch up ..."):
        while loop.time() < deadline:
            now = await _counts(dsn)
            if all(now[k] - before[k] == v for k, v in expected.items()):
                return True
            await asyncio.sleep(0.5)  # polling SQL for the condition, with a deadline
    return False


def _print_summary(settings: Settings) -> None:
    async def fetch():
        import asyncpg

        conn = await asyncpg.connect(_dsn(settings))
        try:
            return await conn.fetch(SUMMARY_SQL)
        finally:
            await conn.close()

    rows = asyncio.run(fetch())
    table = Table(title="camera_minute_counts (objects seen, all demo runs)")
    for column in ("camera_id", "object_class", "objects", "first minute (UTC)", "last minute (UTC)"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["camera_id"], r["object_class"], str(r["objects"]),
            f"{r['first_minute']:%Y-%m-%d %H:%M}", f"{r['last_minute']:%Y-%m-%d %H:%M}",
        )
    Console().print(table)
