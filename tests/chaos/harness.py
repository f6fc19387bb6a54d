"""Chaos runs: the whole stack on real services, faults on a seeded schedule,
then every SQL aggregate against the ground truth the edges created.

    python -m tests.chaos.harness [--seed 1] [--faults 18] [--gap 20] [--link-cut 120]

(`make chaos` runs the long form; `tests/chaos/test_chaos.py` a short one.)
The run owns everything it uses: Mosquitto, Kafka and PostgreSQL on free
loopback ports with data in a temporary folder, the bridge, a worker and
the sink, simulated high-rate cameras and a real camera node on the sample
video. Edges reach the broker through a TCP proxy the harness can cut.
Parts that die on their own (the bridge when Kafka is gone, say) are
restarted as a container runtime would, and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from devtools import truth
from devtools.ports import free_port, free_port_run
from devtools.processes import spawn, stop, wait_bridge_lanes, wait_bridge_online
from devtools.proxy import LinkProxy
from devtools.services import Kafka, KafkaCluster, Mosquitto, Postgres, Services, cluster_bootstrap
from edge.events import NewEvent
from edge.outbox import Outbox
from edge.uplink import Uplink
from fleetsight.mqtt_users import admin_settings, camera_login, ensure_user
from runtime.kafka_offsets import log_offsets
from runtime.mqtt import make_client
from runtime.retry import retry
from runtime.settings import REPO_ROOT, Settings
from runtime.waiting import WaitTimeout, wait_for
from schemas.codec import Event
from schemas.sites import UTC_MIDNIGHT
from schemas.topics import shard_of
from sinks.db import make_engine
from sinks.reconcile import RollupCheck, check_rollups
from sinks.site_occupancy import recount
from tests.chaos.camera import LEGACY_ENV

SENTINEL = "zz-sentinel"
PROBE_CAMERA = "chaos-probe"
PIPELINE = ("bridge", "worker", "sink")
PARTS = ("edge", "edge-in-outage", "mosquitto", "bridge", "kafka", "worker", "sink", "postgres", "link")
# Faults of a run on a 3-node Kafka cluster with two of each pipeline process (Chaos(cluster=True)):
# one node killed and brought back, one node frozen (SIGSTOP: it answers
# nothing and closes nothing; the one coordinating the workers' group, the
# worst case), two nodes down at once, one of the two bridges killed while
# the other takes over its shards.
CLUSTER_PARTS = ("kafka-node", "kafka-node-frozen", "kafka-two-nodes", "bridge-of-two")
SECOND_BRIDGE = "bridge-b"
FROZEN_S = 40.0  # how long a frozen node stays frozen (what issue 35 saw stop the pipeline for all of it)


@dataclass
class Fault:
    part: str
    started: float
    down_s: float
    recovered_s: float | None = None  # fault to first new event visible in SQL
    restarts: int = 0  # pipeline processes that died on their own until it recovered
    flowing_s: float | None = None  # fault to an event through the pipeline while the part is still down
    still_s: float | None = None  # longest time SQL did not change while the part was down (frozen)
    moving_s: float | None = None  # the part back to SQL changing again


@dataclass
class Report:
    events: int = 0
    cameras: int = 0
    faults: list[Fault] = field(default_factory=list)
    crash_restarts: Counter = field(default_factory=Counter)
    takeover_s: list[float] = field(default_factory=list)  # a bridge killed -> all shards online on the other
    resync_s: list[float] = field(default_factory=list)  # on a cluster, before each Kafka fault: waited for every copy in sync
    moved_cameras: int = 0  # cameras on the killed bridge's shards
    replicas: dict[str, int] = field(default_factory=dict)  # on a cluster: topic -> fewest replicas of a partition
    lost: int = 0
    double: int = 0
    late_routed: int = 0
    rollups_differ: int = 0  # hour and day rows that differ from the sums of their minutes (hours), once all is in
    mismatches: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"events sent: {self.events} from {self.cameras} cameras",
            f"faults injected: {dict(Counter(f.part for f in self.faults))}",
            f"restarts after a crash of their own: {dict(self.crash_restarts) or 'none'}",
            f"lost: {self.lost}   double-counted: {self.double}   late-routed: {self.late_routed}   "
            f"hour and day rows off their sums: {self.rollups_differ}",
            *([f"bridge takeover (kill -> every shard online again): {', '.join(f'{t:.1f} s' for t in self.takeover_s)}"
               f" ({self.moved_cameras} cameras moved)"]
              if self.takeover_s else []),
            *([f"waited before each Kafka fault for every copy in sync: {', '.join(f'{t:.0f} s' for t in self.resync_s)}"]
              if self.resync_s else []),
            "recovery per fault (fault -> first new event in SQL):",
        ]
        for f in self.faults:
            rec = f"{f.recovered_s:.1f} s" if f.recovered_s is not None else "not measured"
            restarts = f", {f.restarts} restart(s) of a crashed process" if f.restarts else ""
            if f.flowing_s is not None:
                restarts += f", events flowed {f.flowing_s:.1f} s after it went down"
            if f.still_s is not None:
                restarts += f", SQL stood still {f.still_s:.1f} s at most meanwhile"
            if f.moving_s is not None:
                restarts += f", SQL moving {f.moving_s:.1f} s after it was back"
            lines.append(f"  {f.part:<15} down {f.down_s:5.1f} s, recovered after {rec}{restarts}")
        lines += [f"  mismatch: {m}" for m in self.mismatches[:20]]
        return "\n".join(lines)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch between ``start`` and ``end`` with none of ``times`` (monotonic seconds) in it."""
    marks = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


class SqlMotion:
    """Samples the per-minute table twice a second: each time it changed, and the longest it stood still."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.started = time.monotonic()
        self.changes: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SqlMotion:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        conn: asyncpg.Connection | None = None
        last = None
        while True:
            try:
                conn = conn or await asyncpg.connect(self.dsn)
                now = await conn.fetchval("SELECT (count(*), sum(objects), max(updated_at))::text FROM camera_minute_counts")
                if now != last:
                    if last is not None:
                        self.changes.append(time.monotonic())
                    last = now
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
            await asyncio.sleep(0.5)  # the sampling period

    def longest_still(self) -> float:
        """The longest SQL stood still from the start of sampling until now."""
        return longest_gap(self.changes, self.started, time.monotonic())

    def first_change_after(self, t: float) -> float | None:
        return next((c for c in self.changes if c > t), None)


class Chaos:
    def __init__(
        self, root: Path, seed: int, sim_cameras: int = 3, rate: float = 20.0, video: bool = True, cluster: bool = False,
        legacy_cameras: int = 0,
    ) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.seed = seed
        self.sim_cameras = [f"chaos-{i}" for i in range(1, sim_cameras + 1)]
        # Cameras on the MQTT layout from before bridge shards; the drain at
        # the end sends what they hold on today's (an edge upgraded with a backlog).
        self.legacy = {f"chaos-old-{i}" for i in range(1, legacy_cameras + 1)}
        self.sim_cameras += sorted(self.legacy)
        self.rate = rate
        self.video = video
        self.report = Report()
        self.cluster = cluster
        brokers = 3 if cluster else 1
        ports = {"mqtt": free_port(), "kafka": free_port_run(2 * brokers), "pg": free_port()}
        while set(range(ports["kafka"], ports["kafka"] + 2 * brokers)) & {ports["mqtt"], ports["pg"]}:
            ports["kafka"] = free_port_run(2 * brokers)
        # On a cluster, two of each: the bridges share the shards, the
        # workers and the sinks the partitions.
        self.pipeline = PIPELINE + (tuple(f"{name}-b" for name in PIPELINE) if cluster else ())
        self.settings = Settings(
            mqtt_url=f"mqtt://127.0.0.1:{ports['mqtt']}",
            kafka_bootstrap=cluster_bootstrap(brokers, ports["kafka"]),
            database_url=f"postgresql+asyncpg://fleetsight@127.0.0.1:{ports['pg']}/fleetsight",
            services_dir=root / "services",
            mqtt_topic_root="chaos",
            kafka_topic_prefix="chaos",
            stream_app_id="chaos",
            late_after_s=24 * 3600,
        )
        self.services = Services(self.settings)
        self.proxy: LinkProxy | None = None
        self.edge_settings: Settings | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: set[str] = set()  # parts we stopped on purpose
        self.logs = root / "logs"
        self.probe_seq = 0

    # --- processes ------------------------------------------------------------

    def _spawn_pipeline(self, name: str) -> None:
        settings = self.settings
        kind = name.split("-")[0]
        if name != kind:  # a second one of its kind on this host: its own metrics port
            settings = settings.model_copy(update={f"{kind}_metrics_port": free_port()})
        self.procs[name] = spawn(kind, settings, self.logs / f"{name}.log")

    async def state(self, conn: asyncpg.Connection) -> str:
        """Where events stand: last SQL change per camera, consumer lag per partition."""
        rows = await conn.fetch("SELECT camera_id, max(updated_at) AS changed, sum(objects) AS objects FROM camera_minute_counts GROUP BY 1 ORDER BY 1")
        out = ["SQL: " + ", ".join(f"{r['camera_id']} {r['objects']} objects, changed {r['changed']:%H:%M:%S}" for r in rows)]
        topics = self.settings.kafka_topics
        async with log_offsets(self.settings) as log:
            for group, topic in ((self.settings.stream_app_id, topics.events), (f"{self.settings.kafka_topic_prefix}-sink", topics.rows)):
                ends = await log.ends(topic)
                committed = await log.committed(group, topic)
                out.append(f"{group} on {topic}: " + ", ".join(f"p{p} {committed.get(p, '-')}/{end}" for p, end in ends.items()))
        return "\n".join(out)

    async def state_or_why(self, conn: asyncpg.Connection) -> str:
        try:
            return await self.state(conn)
        except Exception as exc:  # diagnostics must not hide the failure they describe
            return f"(state unavailable: {exc!r})"

    def tails(self, *names: str, lines: int = 30) -> str:
        """The last lines of these parts' logs (the run's folder is removed afterwards)."""
        out = []
        for name in names:
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def _spawn_camera(self, camera: str) -> None:
        assert self.edge_settings is not None
        env = {**os.environ, **self.edge_settings.env(), "PYTHONUNBUFFERED": "1"}
        if camera in self.legacy:
            env[LEGACY_ENV] = "1"
        with open(self.logs / f"{camera}.log", "ab") as out:
            self.procs[camera] = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.camera", camera, str(self.root / f"{camera}.sqlite3"), str(self.rate), str(self.seed)],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def _spawn_video(self) -> None:
        assert self.edge_settings is not None
        config = {
            "camera_id": "chaos-video", "site": "chaos",
            "source": {"uri": str(REPO_ROOT / ".services" / "media" / "vtest.avi"), "realtime": True},
            "lines": [{"name": "crosswalk", "points": [[0.05, 0.55], [0.95, 0.55]]}],
            "zones": [{"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}],
            "outbox": {"path": str(self.root / "chaos-video.sqlite3"), "keep_confirmed": True},
            "mqtt": {"url": self.edge_settings.mqtt_url, "password_file": str(ensure_user(self.settings, "chaos-video", camera=True))},
            "model": {"threads": 1}, "health_interval_s": 10, "occupancy_interval_s": 10,
        }
        path = self.root / "chaos-video.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, **self.edge_settings.env(), "PYTHONUNBUFFERED": "1"}
        with open(self.logs / "chaos-video.log", "ab") as out:
            self.procs["chaos-video"] = subprocess.Popen(
                [sys.executable, "-m", "fleetsight", "edge", "run", "--config", str(path), "--drain-timeout", "5"],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    async def supervise(self) -> None:
        """Restart pipeline processes that died on their own, as `restart: unless-stopped` would."""
        while True:
            await asyncio.sleep(0.5)  # supervision period
            for name in self.pipeline:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None and name not in self.killed:
                    self.report.crash_restarts[name] += 1
                    self._spawn_pipeline(name)

    # --- the run ----------------------------------------------------------------

    async def setup(self, edges: bool = True) -> None:
        """Services, pipeline and (unless ``edges`` is False: see :meth:`start_edges`) the cameras; then a probe through it all."""
        self.logs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "fetch-media.sh"), str(REPO_ROOT / ".services" / "media")], check=True)
        await asyncio.to_thread(self.services.up)
        from sinks.db import upgrade

        await asyncio.to_thread(upgrade, self.settings.database_url)
        self.proxy = LinkProxy(self.settings.mqtt.port)
        await self.proxy.start()
        self.edge_settings = self.settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{self.proxy.port}"})
        for name in self.pipeline:
            self._spawn_pipeline(name)
        assert await asyncio.to_thread(wait_bridge_online, self.settings, 90), "bridge did not come online"
        if edges:
            self.start_edges()
        await self.wait_probe("startup", time.monotonic(), deadline=180)
        if self.cluster:
            self.report.replicas = await self.replicas()

    def start_edges(self) -> None:
        """The simulated cameras (and the video camera, if the run has one)."""
        for camera in self.sim_cameras:
            self._spawn_camera(camera)
        if self.video:
            self._spawn_video()

    async def replicas(self) -> dict[str, int]:
        """Every topic on the cluster (ours, Faust's, Kafka's own) and its fewest replicas of a partition."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            names = await admin.list_topics()
            topics = await admin.describe_topics(names)
            return {t["topic"]: min(len(p["replicas"]) for p in t["partitions"]) for t in topics if t["partitions"]}
        finally:
            await admin.close()

    async def out_of_sync(self) -> int:
        """Partitions of the cluster (every topic) with fewer copies in sync than they have."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            topics = await admin.describe_topics(await admin.list_topics())
            return sum(1 for t in topics for p in t["partitions"] if len(p["isr"]) < len(p["replicas"]))
        finally:
            await admin.close()

    async def in_sync(self) -> float:
        """Wait until every copy of every partition is in sync again; returns how long that took.

        A node back from a fault catches up before it counts as a copy; a
        fault on another node before that leaves some partitions one copy
        short of ``min.insync.replicas`` (seen: a restarted node not in
        sync 30-60 s after its restart on this loaded box), which is Kafka
        waiting, not the pipeline. The next Kafka fault starts from a whole cluster.
        """
        started = time.monotonic()

        async def whole() -> bool:
            try:
                return await self.out_of_sync() == 0
            except Exception:  # noqa: BLE001 - a node still starting: ask again
                return False

        await wait_for(whole, 300, "every partition's copies back in sync", interval=1)
        return time.monotonic() - started

    async def inject(self, part: str, down_s: float) -> Fault:
        fault = Fault(part, time.monotonic(), down_s)
        assert self.proxy is not None
        camera = self.rng.choice(self.sim_cameras)
        if part == "edge":
            self.procs[camera].send_signal(signal.SIGKILL)
            await asyncio.sleep(down_s)  # the part stays down this long
            self._spawn_camera(camera)
        elif part == "edge-in-outage":
            await self.proxy.cut()
            await asyncio.sleep(down_s / 2)
            self.procs[camera].send_signal(signal.SIGKILL)
            self._spawn_camera(camera)
            await asyncio.sleep(down_s / 2)
            await self.proxy.restore()
        elif part == "link":
            await self.proxy.cut()
            await asyncio.sleep(down_s)
            await self.proxy.restore()
        elif part == "bridge-of-two":
            await self._kill_one_bridge(fault, down_s)
        elif part == "kafka-node-frozen":
            victim = await self._coordinating_node()
            pid = victim.pid()
            assert pid is not None, f"{victim.name} is not running"
            async with SqlMotion(self.settings.postgres_dsn) as motion:
                os.kill(pid, signal.SIGSTOP)
                try:
                    await wait_for(lambda: time.monotonic() - fault.started >= down_s, down_s + 5, "the freeze to last", interval=0.5)
                finally:
                    os.kill(pid, signal.SIGCONT)
                fault.still_s = motion.longest_still()
        elif part in ("kafka-node", "kafka-two-nodes"):
            nodes = KafkaCluster(self.settings).nodes
            victims = self.rng.sample(nodes, 1 if part == "kafka-node" else 2)
            for node in victims:
                pid = node.pid()
                assert pid is not None, f"{node.name} is not running"
                os.kill(pid, signal.SIGKILL)
            if part == "kafka-node":
                # Two copies of everything remain: events must flow on while
                # the node is down, no producer or consumer stuck waiting for it.
                await self.wait_probe("one-kafka-node-down", fault.started, deadline=45)
                fault.flowing_s = time.monotonic() - fault.started
            await asyncio.sleep(max(0.0, down_s - (time.monotonic() - fault.started)))  # the node stays down this long
            async with SqlMotion(self.settings.postgres_dsn) as motion:
                for node in victims:
                    await self._restart_service(node)
                back = time.monotonic()
                await wait_for(lambda: motion.first_change_after(back) is not None, 240, "SQL to move after the nodes were back",
                               interval=0.5)
                fault.moving_s = motion.first_change_after(back) - back
        elif part in PIPELINE:
            self.killed.add(part)
            self.procs[part].send_signal(signal.SIGKILL)
            self.procs[part].wait()
            await asyncio.sleep(down_s)
            self._spawn_pipeline(part)
            self.killed.discard(part)
        else:
            service = {"mosquitto": Mosquitto, "kafka": Kafka, "postgres": Postgres}[part](self.settings)
            pid = service.pid()
            assert pid is not None, f"{part} is not running"
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(down_s)
            await self._restart_service(service)
        if part in ("edge", "edge-in-outage", "link"):
            # The pipeline never stopped: recovery is the camera's new events reaching SQL.
            await self.wait_camera(camera, time.time(), fault)
        else:
            await self.wait_probe(part, fault.started, fault=fault)
        return fault

    async def _kill_one_bridge(self, fault: Fault, down_s: float) -> None:
        """SIGKILL the second bridge; time until the first carries every shard; restart it after ``down_s``."""
        carried = [line for line in (self.logs / f"{SECOND_BRIDGE}.log").read_text().splitlines() if "carrying shards" in line]
        assert carried, f"{SECOND_BRIDGE} never said which shards it carries"
        lanes = set(carried[-1].split("carrying shards ", 1)[1].split(", "))
        moving = [c for c in self.sim_cameras if ("legacy" if c in self.legacy else str(shard_of(c))) in lanes]
        assert moving, f"no camera on {SECOND_BRIDGE}'s shards ({sorted(lanes)}): its kill would test nothing"
        self.report.moved_cameras = len(moving)
        self.killed.add(SECOND_BRIDGE)
        self.procs[SECOND_BRIDGE].send_signal(signal.SIGKILL)
        self.procs[SECOND_BRIDGE].wait()
        # Its lanes' wills say offline at once (the broker sees the sockets
        # close); they say online again when the other bridge has them.
        assert await asyncio.to_thread(wait_bridge_lanes, self.settings, lambda lanes: b"offline" in lanes.values(), 30), (
            "no bridge lane went offline after the kill"
        )
        assert await asyncio.to_thread(wait_bridge_online, self.settings, 120), (
            f"the other bridge did not take every shard over\n{self.tails('bridge')}"
        )
        self.report.takeover_s.append(time.monotonic() - fault.started)
        for camera in self.sim_cameras:  # every camera flows again, whichever bridge it had
            await self.wait_camera(camera, time.time(), Fault(f"{camera} after takeover", time.monotonic(), 0))
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - fault.started)))
        self._spawn_pipeline(SECOND_BRIDGE)
        self.killed.discard(SECOND_BRIDGE)

    async def _coordinating_node(self) -> Kafka:
        """The node coordinating the workers' consumer group."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            node_id = await admin.find_coordinator(self.settings.stream_app_id)
        finally:
            await admin.close()
        return next(node for node in KafkaCluster(self.settings).nodes if node.node == node_id)

    async def wait_camera(self, camera: str, since_wall: float, fault: Fault, deadline: float = 240) -> None:
        """Wait until a row of ``camera`` changes after ``since_wall``."""
        conn = await asyncpg.connect(self.settings.postgres_dsn)
        try:
            async def changed() -> bool:
                value = await conn.fetchval(
                    "SELECT max(extract(epoch FROM updated_at)) FROM camera_minute_counts WHERE camera_id = $1", camera
                )
                return value is not None and float(value) > since_wall

            try:
                await wait_for(changed, deadline, f"a new row of {camera}", interval=0.5)
                fault.recovered_s = time.monotonic() - fault.started
                return
            except WaitTimeout:
                pass
            proc = self.procs.get(camera)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGUSR2)  # stacks into its log
                log = self.logs / f"{camera}.log"
                try:
                    await wait_for(lambda: "Current thread" in log.read_text(errors="replace"), 10, "the stack dump", interval=0.1)
                except WaitTimeout:
                    pass
            raise AssertionError(
                f"{camera} sent nothing new within {deadline:.0f} s\n{await self.state_or_why(conn)}\n"
                f"{self.tails(camera, 'bridge', 'worker', 'sink', lines=80)}"
            )
        finally:
            await conn.close()

    @staticmethod
    async def _restart_service(service: Any) -> None:
        # PostgreSQL's children outlive a killed postmaster for a moment.
        await retry(lambda: asyncio.to_thread(service.up), what=f"restarting {service.name}", errors=(Exception,),
                    log=logging.getLogger("chaos"), first_delay=1.0, max_delay=1.0, give_up_after=120)

    async def wait_probe(self, label: str, since: float, fault: Fault | None = None, deadline: float = 240) -> None:
        """Publish probe events until one shows up in SQL: the pipeline works again."""
        admin = admin_settings(self.settings)
        client = make_client(admin, f"chaos-probe-{self.probe_seq}", persistent=False)
        client.connect_async(self.settings.mqtt.host, self.settings.mqtt.port)
        client.loop_start()
        cls = f"probe-{label}-{self.probe_seq}"[:40]
        try:
            conn = None

            async def probed() -> bool:
                nonlocal conn
                self.probe_seq += 1
                event = {"v": 1, "camera_id": PROBE_CAMERA, "site": "chaos", "seq": self.probe_seq, "ts": int(time.time() * 1000),
                         "type": "track.start", "data": {"track_id": 1, "class": cls, "confidence": 0.9}}
                client.publish(self.settings.mqtt_topics.events(PROBE_CAMERA), json.dumps(event), qos=1)
                try:
                    conn = conn or await asyncpg.connect(self.settings.postgres_dsn)
                    return bool(await conn.fetchval("SELECT count(*) FROM camera_minute_counts WHERE object_class = $1", cls))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    conn = None  # the database is restarting
                    return False

            try:
                await wait_for(probed, deadline, f"a probe through the pipeline after {label}", interval=0.5)
            except WaitTimeout:
                raise AssertionError(
                    f"pipeline did not recover after {label} within {deadline:.0f} s\n{self.tails('bridge', 'worker', 'sink')}"
                ) from None
            if fault is not None:
                fault.recovered_s = time.monotonic() - since
        finally:
            client.loop_stop()
            client.disconnect()
            if conn is not None:
                await conn.close()

    async def run(
        self, faults: int, gap_s: float, link_cut_s: float, down_s: tuple[float, float] = (3, 8), parts: tuple[str, ...] = PARTS,
        shuffle: bool = True,
    ) -> Report:
        supervisor: asyncio.Task[None] | None = None
        try:
            # Inside the try: a stack that fails to start is torn down too
            # (seen: cameras and a broker left running after a failed start).
            await self.setup()
            supervisor = asyncio.create_task(self.supervise())
            order = list(parts)
            if shuffle:
                self.rng.shuffle(order)
            schedule = (order * (faults // len(order) + 1))[:faults]
            for part in schedule:
                await asyncio.sleep(gap_s)  # traffic between faults
                down = link_cut_s if part == "link" else FROZEN_S if part == "kafka-node-frozen" else self.rng.uniform(*down_s)
                if self.cluster and part.startswith("kafka"):
                    self.report.resync_s.append(await self.in_sync())
                before = sum(self.report.crash_restarts.values())
                fault = await self.inject(part, down)
                fault.restarts = sum(self.report.crash_restarts.values()) - before
                self.report.faults.append(fault)
            await self.drain()
        finally:
            if supervisor is not None:
                supervisor.cancel()
            await self.teardown()
        return self.report

    async def drain(self) -> None:
        """Stop the edges, send what their outboxes hold, then compare SQL with the truth."""
        cameras = list(self.sim_cameras) + (["chaos-video"] if self.video else [])
        for camera in cameras:
            proc = self.procs.pop(camera)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        now = int(time.time() * 1000)
        recorded: list[Event] = []
        flushers = []
        stop_all = asyncio.Event()
        for camera in cameras:
            outbox = Outbox(self.root / f"{camera}.sqlite3", camera, "chaos", keep_confirmed=True)
            outbox.append([NewEvent(now, "track.start", {"track_id": 0, "class": SENTINEL, "confidence": 1.0})])
            uplink = Uplink(self.settings, outbox, username=camera, password=camera_login(self.settings, camera), resend_after_s=5)
            flushers.append((outbox, uplink, asyncio.create_task(uplink.run(stop_all))))
        drained = await asyncio.gather(*(u.drained(300) for _, u, _ in flushers))
        stop_all.set()
        for outbox, _, task in flushers:
            await task
            recorded += outbox.all_events()
            outbox.close()
        assert all(drained), f"outboxes did not drain: logs in {self.logs}"
        self.report.events = len(recorded)
        self.report.cameras = len(cameras)
        await self.compare(recorded, cameras)

    async def compare(self, recorded: list[Event], cameras: list[str]) -> None:
        conn = await asyncpg.connect(self.settings.postgres_dsn)
        try:
            async def sentinels_in() -> bool:
                got = await conn.fetchval(
                    "SELECT count(DISTINCT camera_id) FROM camera_minute_counts WHERE object_class = $1 AND camera_id = ANY($2)",
                    SENTINEL, cameras,
                )
                return bool(got == len(cameras))

            try:
                await wait_for(sentinels_in, 240, "every camera's sentinel in SQL", interval=1)
            except WaitTimeout:
                pass  # compared anyway: the mismatches say what is missing
            late = {(r["camera_id"], r["seq"]) for r in await conn.fetch("SELECT camera_id, seq FROM late_events")}
            self.report.late_routed = len(late)
            counted = [e for e in recorded if (e.camera_id, e.seq) not in late]
            known = {(e.camera_id, e.seq) for e in recorded}
            if not late <= known:
                self.report.mismatches.append(f"late events that no edge created: {sorted(late - known)[:5]}")
            result = truth.compare(truth.expected(counted), await truth.in_sql(conn, cameras))
            self.report.mismatches += result.mismatches
            self.report.lost += result.lost
            self.report.double += result.double
            self.report.mismatches += await compare_sites(conn, counted)
        finally:
            await conn.close()
        await self.compare_rollups()

    async def compare_rollups(self) -> None:
        """Every hour equals the sums of its minutes and every day of its hours (their rows may trail the minutes' a little)."""
        engine = make_engine(self.settings.database_url)
        differ: list[RollupCheck] = []

        async def agree() -> bool:
            nonlocal differ
            async with engine.connect() as conn:
                _, differ = await check_rollups(conn, 0)
            return not differ

        try:
            await wait_for(agree, 60, "the hour and day rows equal to their sums", interval=1)
        except WaitTimeout:
            self.report.rollups_differ = len(differ)
            self.report.mismatches += [f"{d.table} {d.camera_id} {d.key} at {d.period}: {d.differences}" for d in differ[:5]]
        finally:
            await engine.dispose()

    async def teardown(self) -> None:
        stop([p for p in self.procs.values()])
        self.procs.clear()
        if self.proxy:
            await self.proxy.cut()
        await asyncio.to_thread(self.services.down)


async def compare_sites(conn: asyncpg.Connection, events: list[Event]) -> list[str]:
    """The site minutes against the doors' person crossings the cameras recorded (each once), each day from zero."""
    doors = {
        (e.camera_id, e.data["version"], line["name"]): line["entrance"]
        for e in events if e.type == "geometry" for line in e.data["lines"] if line.get("entrance")
    }
    flows: dict[str, dict[int, list[int]]] = {}
    for e in {(e.camera_id, e.seq): e for e in events}.values():
        d = e.data
        entrance = doors.get((e.camera_id, d.get("geometry", ""), d.get("line"))) if e.type == "line.cross" else None
        if entrance and d["class"] == "person":
            counts = flows.setdefault(e.site, {}).setdefault(e.minute, [0, 0])
            counts[0 if d["direction"] == entrance else 1] += 1
    want = {
        (site, minute): v for site, per in flows.items()
        for minute, v in recount({m: (i, o) for m, (i, o) in per.items()}, UTC_MIDNIGHT).items()
    }
    rows = await conn.fetch("SELECT site, minute, people_in, people_out, inside FROM site_minute_occupancy")
    got = {(r["site"], int(r["minute"].timestamp() * 1000)): (r["people_in"], r["people_out"], r["inside"]) for r in rows}
    if not want:
        return ["no door crossings recorded: the site check saw nothing"]
    return [f"site {k[0]} minute {k[1]}: SQL {got.get(k)}, the cameras {want.get(k)}" for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)][:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=18)
    parser.add_argument("--gap", type=float, default=20.0, help="seconds of traffic between faults")
    parser.add_argument("--link-cut", type=float, default=120.0, help="seconds an edge link stays cut")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per simulated camera")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, data)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fleetsight-chaos-"))
    os.chmod(root, 0o755)
    try:
        report = asyncio.run(Chaos(root, args.seed, rate=args.rate).run(args.faults, args.gap, args.link_cut))
        print(report.render())
        sys.exit(0 if report.lost == 0 and report.double == 0 else 1)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
