"""End to end on one box: a fleet's live rate, an outage of every camera, and the drain after it.

Run: .venv/bin/python -m bench.outage_drain [--cameras 100] [--rate 10] [--outage 120] [--bridges 1 2]
(starts the local services if they are not up; topics, MQTT root and a
database of its own for each run).

For each bridge count: the bridges, one worker and one sink run as
processes; ``fleetsight edge simulate`` runs the cameras (real outboxes) in a
process of its own, reaching the broker through a TCP relay this script
can cut. After a warm-up and a live phase, the relay is cut for
``--outage`` seconds (every camera keeps recording into its outbox) and then
restored. Measured from the restore:

- edge -> Kafka: until the cameras' outboxes hold no more than 2 s of live
  events (everything else confirmed in Kafka);
- edge -> SQL: until the worker has applied every event Kafka held at that
  moment (``stream_offsets`` against the topic's end offsets).

Drain rate (sustained, over the whole drain) = (backlog + what the cameras
made meanwhile) / drain time, printed as a multiple of the live rate. The
cameras, the relay and the pipeline share the machine, as they would not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devtools.processes import spawn, stop, wait_bridge_online
from devtools.proxy import LinkProxy
from devtools.sandbox import Sandbox
from devtools.services import Services
from fleetsight.mqtt_users import ensure_user
from runtime.kafka_admin import ensure_topics
from runtime.kafka_offsets import behind, log_offsets
from runtime.settings import REPO_ROOT, Settings, load_settings
from runtime.waiting import WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    bridges: int
    asked: float
    live_rate: float = 0.0
    backlog: int = 0
    edge_drain_s: float = 0.0
    sql_drain_s: float = 0.0
    drained: int = 0  # events confirmed in Kafka over the edges' drain
    records: int = 0  # records the bridges wrote to the events topic meanwhile

    def lines(self) -> list[str]:
        made = self.live_rate * self.sql_drain_s
        sustained = (self.backlog + made) / self.sql_drain_s if self.sql_drain_s else 0.0
        edge = (self.backlog + self.live_rate * self.edge_drain_s) / self.edge_drain_s if self.edge_drain_s else 0.0
        return [
            f"{self.bridges} bridge(s): live {self.live_rate:.0f} events/s (what the simulator made here; asked "
            f"{self.asked:.0f}); backlog after the outage {self.backlog} events",
            f"  edge -> Kafka drained in {self.edge_drain_s:5.1f} s: {edge:7.0f} events/s = {edge / self.live_rate:5.1f}x live",
            f"  edge -> SQL   drained in {self.sql_drain_s:5.1f} s: {sustained:7.0f} events/s = {sustained / self.live_rate:5.1f}x live",
            f"  records written over the edges' drain: {self.records}, {self.drained / max(self.records, 1):.0f} events each "
            "(the bridge packs a camera's waiting messages)",
        ]


class Fleet:
    """Outbox files of the simulated cameras, read beside the process that writes them."""

    def __init__(self, folder: Path, cameras: list[str]) -> None:
        self.paths = [folder / f"{camera}.sqlite3" for camera in cameras]

    def _each(self, sql: str) -> int:
        total = 0
        for path in self.paths:
            if not path.exists():
                continue
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute(sql).fetchone()
                total += int(row[0] or 0) if row else 0
            except sqlite3.OperationalError:
                pass  # the file is being created
            finally:
                db.close()
        return total

    def pending(self) -> int:
        """Events recorded and not yet confirmed in Kafka."""
        return self._each("SELECT count(*) FROM events")

    def made(self) -> int:
        return self._each("SELECT seq FROM sqlite_sequence WHERE name = 'events'")


async def worker_behind(settings: Settings, ends: dict[int, int] | None = None) -> tuple[int, dict[int, int]]:
    """(records the worker has not applied of ``ends``, or of the current end offsets; those end offsets)."""
    if ends is None:
        async with log_offsets(settings) as log:
            ends = await log.ends(settings.kafka_topics.events)
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        rows = await conn.fetch("SELECT partition, next_offset FROM stream_offsets WHERE app = $1 AND topic = $2",
                                settings.stream_app_id, settings.kafka_topics.events)
    finally:
        await conn.close()
    return behind(ends, {r["partition"]: r["next_offset"] or 0 for r in rows}), ends


async def run_once(base: Settings, bridges: int, cameras: int, rate: float, outage_s: float, logs: Path) -> Result:
    box = Sandbox(base, prefix="drain")
    name, settings = box.name, box.settings
    await box.create_database()
    await ensure_topics(settings)
    ids = [f"{name}-cam-{i}" for i in range(1, cameras + 1)]
    for camera in ids:
        ensure_user(settings, camera, camera=True)  # returns once the broker takes the login
    quiet = settings.model_copy(update={f"{p}_metrics_port": 0 for p in ("bridge", "worker", "sink", "simulator")})
    procs = [spawn("bridge", quiet, logs / f"{name}-bridge-{i}.log") for i in range(bridges)]
    procs += [spawn(c, quiet, logs / f"{name}-{c}.log") for c in ("worker", "sink")]
    proxy = LinkProxy(settings.mqtt.port)
    await proxy.start()
    result = Result(bridges, cameras * rate)
    outboxes = Path(tempfile.mkdtemp(prefix=f"{name}-outboxes-"))
    fleet = Fleet(outboxes, ids)
    try:
        if not await asyncio.to_thread(wait_bridge_online, settings, 120):
            raise RuntimeError(f"the bridges did not come online; logs in {logs}")
        env = {**os.environ, **quiet.env(), "FLEETSIGHT_MQTT_URL": f"mqtt://127.0.0.1:{proxy.port}",
               "PYTHONUNBUFFERED": "1"}
        env.pop("FLEETSIGHT_CONFIG", None)
        with open(logs / f"{name}-edges.log", "ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fleetsight", "edge", "simulate", "--cameras", str(cameras), "--rate", str(rate),
                 "--duration", str(outage_s + 600), "--outbox-dir", str(outboxes), "--camera-prefix", f"{name}-cam",
                 "--drain-timeout", "1"],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            ))
        live_limit = rate * cameras * 2  # events: 2 s of the fleet's output
        await wait_for(lambda: fleet.made() > live_limit * 5 and fleet.pending() < live_limit, 180, "the fleet to run live",
                       interval=0.5)
        made, started = fleet.made(), time.monotonic()
        await asyncio.sleep(15)  # the live phase, measured
        result.live_rate = (fleet.made() - made) / (time.monotonic() - started)
        await proxy.cut()
        await asyncio.sleep(outage_s)  # the outage
        result.backlog = fleet.pending()
        async with log_offsets(settings) as log:
            at_restore, made_at_restore = await log.ends(settings.kafka_topics.events), fleet.made()
        await proxy.restore()
        restored = time.monotonic()
        live_limit = result.live_rate * 2
        await wait_for(lambda: fleet.pending() <= live_limit, 900, "the edges' backlog in Kafka", interval=0.25)
        result.edge_drain_s = time.monotonic() - restored
        result.drained = result.backlog + fleet.made() - made_at_restore - fleet.pending()
        _, ends = await worker_behind(settings)
        result.records = sum(ends.values()) - sum(at_restore.values())

        async def applied() -> bool:
            return (await worker_behind(settings, ends))[0] == 0

        await wait_for(applied, 900, "the worker to apply the backlog", interval=0.25)
        result.sql_drain_s = time.monotonic() - restored
        return result
    except WaitTimeout as exc:
        raise RuntimeError(f"{exc}; logs in {logs}") from None
    finally:
        await proxy.cut()
        stop(procs)
        await box.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per camera")
    parser.add_argument("--outage", type=float, default=120.0, help="seconds every camera's link is cut")
    parser.add_argument("--bridges", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    base = load_settings()
    Services(base).up()
    logs = Path(tempfile.mkdtemp(prefix="fleetsight-drain-"))
    print(f"{args.cameras} cameras at {args.rate:g} events/s each, every link cut for {args.outage:g} s; logs in {logs}")
    for bridges in args.bridges:
        result = asyncio.run(run_once(base, bridges, args.cameras, args.rate, args.outage, logs))
        print("\n".join(result.lines()), flush=True)


if __name__ == "__main__":
    main()
