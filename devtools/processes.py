"""Start and stop the pipeline's own processes (bridge, worker, sink) as children."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from runtime.mqtt import make_client
from runtime.settings import REPO_ROOT, Settings
from schemas.topics import SHARDS

COMPONENTS = ("bridge", "worker", "sink")


def spawn(component: str, settings: Settings, log_path: Path, args: list[str] | None = None) -> subprocess.Popen:
    """Run ``fleetsight <component> [args]`` with these settings, output to ``log_path``."""
    env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
    env.pop("FLEETSIGHT_CONFIG", None)  # the settings are all in the environment now
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleetsight", *component.split(), *(args or [])], cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def stop(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (a crashed Faust worker can ignore SIGTERM)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_bridge_lanes(settings: Settings, want: Callable[[dict[str, bytes]], bool], timeout: float = 60.0) -> bool:
    """True once the bridge lanes' retained statuses (topic -> ``online``/``offline``) satisfy ``want``."""
    lanes: dict[str, bytes] = {}
    met = threading.Event()
    client = make_client(settings, f"{settings.mqtt_topic_root}-probe-{uuid.uuid4().hex[:6]}", persistent=False)

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        lanes[msg.topic] = bytes(msg.payload)
        if want(dict(lanes)):
            met.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(settings.mqtt_topics.all_bridge_status, qos=1)
    client.on_message = on_message
    client.connect_async(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        return met.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_bridge_online(settings: Settings, timeout: float = 60.0) -> bool:
    """True once every shard's bridge lane says ``online``: the bridges have
    subscribed to every camera."""
    return wait_bridge_lanes(settings, lambda lanes: sum(v == b"online" for v in lanes.values()) == SHARDS + 1, timeout)
