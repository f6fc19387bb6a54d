"""Helpers for tests that run the pipeline on the real local services."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, TopicPartition

from devtools import truth as oracle
from devtools.configs import mosquitto_conf
from devtools.ports import free_port, port_open
from devtools.processes import spawn, stop, wait_bridge_online
from devtools.sandbox import Sandbox
from fleetsight.mqtt_users import admin_settings, ensure_user, password_file
from runtime.kafka_client import kafka_security
from runtime.mqtt import make_client, publish_confirmed
from runtime.settings import Settings
from runtime.waiting import wait_for, wait_until
from schemas.codec import Event


class Stack(Sandbox):
    """An isolated pipeline (own topics, MQTT root, database) on the shared services, and its processes."""

    def __init__(self, base: Settings, tmp: Path, **overrides: Any) -> None:
        super().__init__(base, **overrides)
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, component: str, name: str | None = None, settings: Settings | None = None) -> subprocess.Popen:
        """Run ``fleetsight <component>`` (with ``settings`` of its own, if given); ``name`` tells two of a kind apart."""
        name = name or component
        log_path = self.tmp / f"{name}.log"
        self.logs[name] = log_path
        proc = self.procs[name] = spawn(component, settings or self.settings, log_path)
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        stop(list(self.procs.values()))
        self.procs.clear()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for component, path in self.logs.items():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {component} ---\n" + "\n".join(text))
        return "\n".join(out)

    def assert_running(self) -> None:
        for component, proc in self.procs.items():
            assert proc.poll() is None, f"{component} exited with {proc.returncode}\n{self.log_tail()}"

    async def cleanup(self) -> None:
        self.stop_all()
        await self.remove()

    def camera_login(self, camera_id: str) -> tuple[str, str]:
        """Provision ``camera_id`` on the broker; its (user, password)."""
        ensure_user(self.settings, camera_id, camera=True)
        return camera_id, password_file(self.settings, camera_id, camera=True).read_text().strip()

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def minute_counts(self) -> dict[tuple[str, str, int], int]:
        rows = await self.query(
            "SELECT camera_id, object_class, (extract(epoch FROM minute) * 1000)::bigint AS minute, objects "
            "FROM camera_minute_counts WHERE objects > 0"  # rows of only tracks ended have none
        )
        return {(r["camera_id"], r["object_class"], r["minute"]): r["objects"] for r in rows}

    async def wait_bridge_online(self, timeout: float = 60) -> None:
        assert await asyncio.to_thread(wait_bridge_online, self.settings, timeout), f"bridge not online\n{self.log_tail()}"

    async def events_in_kafka(self) -> int:
        """Events ever written to the events topic, duplicates included."""
        from schemas.codec import decode

        return sum(len(decode(value)) for value in await self.records())

    async def records(self) -> list[bytes]:
        """Every record of the events topic, partition by partition, each in its order."""
        topic = self.settings.kafka_topics.events
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, **kafka_security(self.settings))
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(self.settings.kafka_partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            values: dict[TopicPartition, list[bytes]] = {tp: [] for tp in partitions}
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    values[tp] += [m.value for m in messages]
            return [value for tp in partitions for value in values[tp]]
        finally:
            await consumer.stop()

    async def deadletters(self, expect: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Read the dead-letter topic from the start until ``expect`` records."""
        consumer = AIOKafkaConsumer(
            self.settings.kafka_topics.deadletter,
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout
            while len(records) < expect and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    records.extend(json.loads(m.value) for m in messages)
        finally:
            await consumer.stop()
        return records


def admin_client(settings: Settings, prefix: str, inflight: int = 20) -> mqtt.Client:
    """A connected MQTT client logged in as the admin user (any topic)."""
    client = make_client(admin_settings(settings), f"{prefix}-{uuid.uuid4().hex[:8]}", persistent=False)
    client.max_inflight_messages_set(inflight)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    return client


class MqttWatcher:
    """Subscribes to topics in the background and remembers what arrived."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self.client = admin_client(settings, "watch")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(msg)

    def latest(self, topic: str | None = None) -> bytes | None:
        with self._lock:
            for msg in reversed(self.messages):
                if topic is None or msg.topic == topic:
                    return msg.payload
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(settings: Settings, items: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish (topic, payload) pairs at QoS 1 and wait for every PUBACK."""
    client = admin_client(settings, "pub", inflight=200)
    client.loop_start()
    try:
        publish_confirmed(client, items, retain=retain, timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def scrape(port: int) -> dict[str, float]:
    """A process's /metrics, sample name (with labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def total(values: dict[str, float], pattern: str) -> float:
    """The sum of the samples whose name (with labels) matches ``pattern``."""
    return sum(v for k, v in values.items() if re.fullmatch(pattern, k))


@asynccontextmanager
async def table_locked(stack: Stack, table: str) -> AsyncIterator[None]:
    """``table`` locked against writes (EXCLUSIVE mode) until the block ends: writers wait on it, readers do not."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


class PrivateBroker:
    """A Mosquitto of the test's own, on its own port, that the test may kill."""

    def __init__(self, directory: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.port = free_port()
        self.dir = directory
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        # The shipped broker settings, but anonymous, on its own port and data.
        overrides: dict[str, str | None] = {
            "listener": f"{self.port} 127.0.0.1", "allow_anonymous": "true", "password_file": None, "acl_file": None,
            "persistence_location": f"{directory / 'data'}/", "autosave_interval": "1", "user": "root",
        }
        if tls:
            ca, cert, key = tls
            overrides |= {"cafile": str(ca), "certfile": str(cert), "keyfile": str(key)}
        self.conf.write_text(mosquitto_conf(overrides))
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port), 10, "the private mosquitto to listen", interval=0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


# --- events, and what SQL must hold for them ------------------------------------

SENTINEL = "zz-sentinel"
CLASSES = ("person", "car", "bicycle")


def event(camera: str, seq: int, ts: int, cls: str = "person", site: str = "site-a", **over: Any) -> dict:
    """A valid ``track.start`` event as it goes on the wire."""
    body = {"track_id": seq, "class": cls, "confidence": 0.8}
    return {"v": 1, "camera_id": camera, "site": site, "seq": seq, "ts": ts, "type": "track.start", "data": body, **over}


def truth(events: list[dict] | list[Event]) -> Counter:
    """Objects seen per (camera, class, minute), each (camera, seq) once: the oracle's
    projection onto ``camera_minute_counts.objects``."""
    return oracle.objects_per_minute(oracle.expected(events))


async def assert_sql_matches(stack: Stack, expected: Counter, cameras: list[str], timeout: float = 120) -> None:
    """Wait for each camera's sentinel (the last event it sent), then compare exactly."""

    async def sentinels_in() -> bool:
        stack.assert_running()
        got = await stack.minute_counts()
        return all(any(k[0] == cam and k[1] == SENTINEL for k in got) for cam in cameras)

    await wait_for(sentinels_in, timeout, f"the sentinel rows of {cameras}")
    got = {k: v for k, v in (await stack.minute_counts()).items() if k[0] in cameras}
    assert got == dict(expected)


def with_sentinel(camera: str, seq: int, events: list[dict]) -> dict:
    """Append the camera's last event, a ``SENTINEL`` one, whose row says the others are in."""
    last = event(camera, seq, int(time.time() * 1000), cls=SENTINEL)
    events.append(last)
    return last
