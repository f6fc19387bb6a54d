"""The shipped docker-compose.yml, run for real in containers, used only through its published ports.

Starts a Docker engine if none runs (and stops it again), makes the images
(``tests/compose/stack.py``: stand-ins for the third-party ones, ours from
``deploy/Dockerfile``), brings up the stack from a copy of the repository
with its own ``./secrets``, then, as a user would: a camera login, events
with ``mosquitto_pub`` (a duplicate and a malformed one among them), the
exact rows read with ``psql``, a model published and rolled out with the
``cli`` service, the worker's process killed and restarted by compose with
the counts still exact; ``down -v`` at the end. Skipped, with the reason,
where no container engine can be had.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from devtools.ports import port_open
from devtools.services import Kafka
from runtime.settings import REPO_ROOT, load_settings
from runtime.waiting import WaitTimeout, wait_for
from tests.compose.stack import SERVICES, ComposeStack, Engine, Unavailable, base_image, build_images, run

pytestmark = pytest.mark.compose

CAMERA = "cam-compose-1"
LATER = "cam-compose-2"  # a camera added while the stack runs
# Host ports each service publishes; the database only on loopback.
PUBLISHED = {"mosquitto": {"1883"}, "postgres": {"5432"}}
LOOPBACK_ONLY = {"postgres"}


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory):
    engine = Engine()
    try:
        engine.start()
        base_image()
    except Unavailable as exc:
        pytest.skip(f"no container engine here: {exc}")
    stack = None
    try:
        for port in (1883, 5432):
            assert not port_open(port), f"port {port} is taken: the compose file publishes it"
        kafka = Kafka(load_settings())
        kafka.fetch_jars()
        started = time.monotonic()
        build_images(kafka.lib.resolve())
        print(f"images built in {time.monotonic() - started:.0f} s")
        stack = ComposeStack(tmp_path_factory.mktemp("compose"))
        stack.copy_repository()
        # A camera login, as the README says to make one.
        run("bash", "scripts/compose-secrets.sh", CAMERA, cwd=stack.root)
        (stack.root / "models").mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / "edge" / "models" / "nanodet-g-416.onnx", stack.root / "models" / "candidate.onnx")
        stack.compose("up", "-d", *SERVICES, timeout=900)
        yield stack
    finally:
        if stack is not None:
            stack.compose("--profile", "tools", "down", "-v", "--remove-orphans", check=False)
        engine.stop()


async def until(stack: ComposeStack, check, timeout: float, what: str) -> None:
    """tests.support.wait_for, with the stack's logs when it times out."""
    try:
        await wait_for(check, timeout, what, interval=1)
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def publish(stack: ComposeStack, payloads: list[str], camera: str = CAMERA) -> None:
    """As the camera would: its own login, its own topic, QoS 1."""
    password = stack.secret(f"cameras/{camera}.password")
    for payload in payloads:
        run("mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-u", camera, "-P", password, "-q", "1",
            "-t", f"fleetsight/cameras/{camera}/events", "-m", payload)


def event(seq: int, ts: int, cls: str = "person", camera: str = CAMERA) -> str:
    return json.dumps({"v": 1, "camera_id": camera, "site": "compose", "seq": seq, "ts": ts, "type": "track.start",
                       "data": {"track_id": seq, "class": cls, "confidence": 0.9}})


def publish_as_later(stack: ComposeStack, now: int) -> bool:
    try:
        publish(stack, [event(1, now, camera=LATER)], camera=LATER)
    except RuntimeError:
        return False  # refused until the broker has reloaded
    return True


def psql(stack: ComposeStack, sql: str) -> list[list[str]]:
    out = run("psql", "-h", "127.0.0.1", "-p", "5432", "-U", "fleetsight", "-d", "fleetsight", "-At", "-F", "|", "-c", sql,
              env={**os.environ, "PGPASSWORD": stack.secret("postgres.password")}, check=False)
    return [line.split("|") for line in out.splitlines() if line]


def objects(stack: ComposeStack, camera: str = CAMERA) -> dict[str, int]:
    return {cls: int(n) for cls, n in psql(stack, f"SELECT object_class, sum(objects) FROM camera_minute_counts WHERE camera_id = '{camera}' GROUP BY 1")}


async def test_the_compose_stack_counts_exactly_and_survives_a_killed_worker(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    # Nothing listens beyond what the file publishes; our processes are not root.
    for service in SERVICES:
        if service == "migrate":
            continue
        ports = json.loads(stack.inspect(service, "{{json .NetworkSettings.Ports}}") or "{}")
        bindings = [b for v in ports.values() if v for b in v]
        assert {b["HostPort"] for b in bindings} == PUBLISHED.get(service, set()), (service, bindings)
        if service in LOOPBACK_ONLY:
            assert {b["HostIp"] for b in bindings} <= {"127.0.0.1", "::1"}, (service, bindings)
    for service in ("bridge", "worker", "sink", "notifier"):
        assert stack.compose("exec", "-T", service, "id", "-u").strip() != "0", service

    now = int(time.time() * 1000)
    publish(stack, [event(s, now) for s in range(1, 21)] + [event(7, now), "not json"])
    await until(stack, lambda: objects(stack) == {"person": 20}, 180, "20 objects in SQL (a duplicate dropped, bad input aside)")
    await until(stack, lambda: psql(stack, f"SELECT seq_received, seq_gaps FROM camera_status WHERE camera_id = '{CAMERA}'") == [["20", "0"]],
                60, "the camera's status")

    # A camera added to the running stack: its login, then the broker reloads its password file.
    run("bash", "scripts/compose-secrets.sh", LATER, cwd=stack.root)
    stack.compose("kill", "-s", "HUP", "mosquitto")
    await until(stack, lambda: publish_as_later(stack, now), 60, "the new camera's login to work")
    await until(stack, lambda: objects(stack, LATER) == {"person": 1}, 120, "the new camera's event in SQL")

    # The operator's cli service: publish a model, roll it out to the camera.
    stack.compose("--profile", "tools", "run", "--rm", "cli", "model", "publish", "/models/candidate.onnx", "--version", "compose-v2", timeout=300)
    stack.compose("--profile", "tools", "run", "--rm", "cli", "model", "rollout", "compose-v2", "--camera", CAMERA, timeout=300)
    assert psql(stack, "SELECT version FROM model_versions") == [["compose-v2"]]
    assert psql(stack, "SELECT target_kind, target FROM model_rollout_targets") == [["camera", CAMERA]]

    # The worker's process dies (not `docker stop`): compose's restart policy brings it back.
    pid = int(stack.inspect("worker", "{{.State.Pid}}"))
    os.kill(pid, signal.SIGKILL)
    await until(stack, lambda: stack.inspect("worker", "{{.RestartCount}} {{.State.Running}}") == "1 true", 120, "the worker restarted")
    publish(stack, [event(s, now, "car") for s in range(21, 31)] + [event(25, now, "car")])
    await until(stack, lambda: objects(stack) == {"person": 20, "car": 10}, 240, "30 objects in SQL after the restart")
    assert subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", stack.container("worker")],
                          capture_output=True, text=True).stdout.strip() in ("healthy", "starting")
    # The notifier (no webhooks in the shipped file) runs and has never been restarted.
    assert stack.inspect("notifier", "{{.RestartCount}} {{.State.Running}}") == "0 true", stack.logs()
