"""Locked-down defaults on the real broker and database."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest

from devtools.sandbox import admin_dsn
from runtime.mqtt import make_client
from runtime.settings import Settings
from runtime.waiting import wait_for
from sinks.db import make_engine
from sinks.keeper import PartitionKeeper
from sinks.reconcile import Reconciler
from sinks.writer import upsert
from tests.support import MqttWatcher, PrivateBroker, Stack, publish

pytestmark = pytest.mark.integration


def camera_client(stack: Stack, camera_id: str) -> mqtt.Client:
    user, password = stack.camera_login(camera_id)
    client = make_client(stack.settings, f"sec-{uuid.uuid4().hex[:6]}", persistent=False, username=user, password=password)
    client.connect(stack.settings.mqtt.host, stack.settings.mqtt.port)
    client.loop_start()
    return client


def publish_and_wait(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)


async def test_a_camera_cannot_publish_as_another_nor_read_its_topics(stack: Stack) -> None:
    topics = stack.settings.mqtt_topics
    a, b = f"sec-a-{uuid.uuid4().hex[:4]}", f"sec-b-{uuid.uuid4().hex[:4]}"
    watcher = MqttWatcher(stack.settings, f"{topics.root}/#")
    cam_a = camera_client(stack, a)
    received: list[str] = []
    cam_a.on_message = lambda c, u, m: received.append(m.topic)
    try:
        # Writing: into b's topics is dropped by the broker, its own goes through.
        publish_and_wait(cam_a, topics.events(b), b'{"forged": true}')
        publish_and_wait(cam_a, topics.ack(a), b"not mine to write")
        publish_and_wait(cam_a, topics.events(a), b'{"mine": true}')
        await wait_for(lambda: watcher.latest(topics.events(a)) is not None, 10, "a's own event at the broker")
        assert watcher.latest(topics.events(b)) is None
        assert watcher.latest(topics.ack(a)) is None

        # Reading: a subscribes to b's ack, to every camera's events and to its own ack;
        # only its own ack reaches it.
        subacks: list[int] = []
        cam_a.on_subscribe = lambda c, u, mid, codes, p: subacks.append(mid)
        for topic in (topics.ack(b), topics.all_events(), topics.ack(a)):
            cam_a.subscribe(topic, qos=1)
        # The messages below are not retained: publish only once the broker has the subscriptions.
        await wait_for(lambda: len(subacks) == 3, 10, "a's subscriptions acknowledged")
        publish(stack.settings, [(topics.ack(b), b"for b"), (topics.events(b), b"b's event"), (topics.ack(a), b"for a")])
        await wait_for(lambda: topics.ack(a) in received, 10, "a's own ack")
        assert received == [topics.ack(a)]
    finally:
        cam_a.loop_stop()
        cam_a.disconnect()
        watcher.close()


async def test_anonymous_and_wrong_passwords_are_refused(stack: Stack) -> None:
    mosquitto_pub = shutil.which("mosquitto_pub")
    assert mosquitto_pub
    base = [mosquitto_pub, "-h", stack.settings.mqtt.host, "-p", str(stack.settings.mqtt.port), "-q", "1", "-t", "x/y", "-m", "z"]
    user, _ = stack.camera_login(f"sec-c-{uuid.uuid4().hex[:4]}")
    for extra in ([], ["-u", user, "-P", "wrong"], ["-u", "nobody", "-P", "x"]):
        result = subprocess.run(base + extra, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0 and "not authorised" in (result.stdout + result.stderr).lower()


async def test_a_camera_claiming_another_in_its_payload_is_dead_lettered(stack: Stack) -> None:
    stack.start("bridge")
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    a = f"sec-d-{uuid.uuid4().hex[:4]}"
    cam = camera_client(stack, a)
    forged = {"v": 1, "camera_id": "someone-else", "site": "s", "seq": 1, "ts": int(time.time() * 1000),
              "type": "track.start", "data": {"track_id": 1, "class": "person", "confidence": 0.9}}
    try:
        publish_and_wait(cam, topics.events(a), json.dumps(forged).encode())
    finally:
        cam.loop_stop()
        cam.disconnect()
    [letter] = await stack.deadletters(expect=1)
    assert (letter["reason"], letter["camera_id"], letter["seq"]) == ("camera_mismatch", a, 1)
    assert "someone-else" in letter["detail"]


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 and localhost, made now."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=FleetSight test CA", "-keyout", str(ca_key), "-out", str(ca_crt))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
    return ca_crt, crt, key


def test_mqtt_over_tls_with_verification(tmp_path: Path) -> None:
    ca, crt, key = make_ca_and_server_cert(tmp_path)
    broker = PrivateBroker(tmp_path / "broker", tls=(ca, crt, key))
    broker.start()
    try:
        settings = Settings(mqtt_url=f"mqtts://127.0.0.1:{broker.port}", mqtt_ca_file=ca, mqtt_username=None, services_dir=tmp_path)
        got = threading.Event()
        client = make_client(settings, "tls-ok", persistent=False)
        client.on_message = lambda c, u, m: got.set()
        client.connect(settings.mqtt.host, settings.mqtt.port)
        client.subscribe("t/x", qos=1)
        client.loop_start()
        client.publish("t/x", b"over tls", qos=1).wait_for_publish(10)
        assert got.wait(10), "no round trip over TLS"
        client.loop_stop()
        client.disconnect()

        # A client that trusts another CA refuses the broker.
        (tmp_path / "other").mkdir()
        other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
        wrong = make_client(settings.model_copy(update={"mqtt_ca_file": other_ca}), "tls-wrong", persistent=False)
        with pytest.raises(Exception, match="(?i)certificate|ssl"):
            wrong.connect(settings.mqtt.host, settings.mqtt.port)
    finally:
        broker.kill()


async def test_writer_may_only_write_its_tables_and_analyst_only_read(stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]
    writer, analyst = f"writer_{suffix}", f"analyst_{suffix}"
    admin = await asyncpg.connect(admin_dsn(stack.settings, stack.db_name))
    try:
        await admin.execute(f'CREATE ROLE "{writer}" LOGIN IN ROLE fleetsight_writer')
        await admin.execute(f'CREATE ROLE "{analyst}" LOGIN IN ROLE fleetsight_analyst')
        host = admin_dsn(stack.settings).split("@", 1)[1].split("/", 1)[0]
        as_writer = await asyncpg.connect(f"postgresql://{writer}@{host}/{stack.db_name}")
        as_analyst = await asyncpg.connect(f"postgresql://{analyst}@{host}/{stack.db_name}")
        try:
            insert = (
                "INSERT INTO camera_status (camera_id, site, online, last_heard_at, seq_received, seq_gaps, version) "
                "VALUES ($1, 's', true, now(), 0, 0, 1)"
            )
            await as_writer.execute(insert, "cam-w")
            await as_writer.execute("UPDATE camera_status SET online = false WHERE camera_id = $1", "cam-w")
            for forbidden in ("DELETE FROM camera_status", "DROP TABLE alerts", "ALTER TABLE alerts ADD COLUMN x int", "TRUNCATE late_events"):
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await as_writer.execute(forbidden)
            # The sink's reconciler needs no more than the writer role: it reads every table, keeps its verdicts.
            await as_writer.execute(
                "INSERT INTO camera_minute_events (camera_id, minute, site, seq_digest, events) VALUES ('cam-w', now(), 's', '0000000000000000', 1)"
            )
            engine = make_engine(f"postgresql+asyncpg://{writer}@{host}/{stack.db_name}")
            try:
                verdicts = await Reconciler(engine, 1.0, 3600.0, 60.0, write_rows=lambda rows: upsert(engine, rows)).once()
                # Partition maintenance needs the owner: as the writer it says so and the sink goes on with what there is.
                keeper = PartitionKeeper(engine, stack.settings)
                await keeper.maintain()
                assert "camera_minute_counts" in keeper.bounds and not keeper.due()
            finally:
                await engine.dispose()
            assert [v.state for v in verdicts] == ["pending"]  # no ledger from cam-w
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await as_writer.execute("DELETE FROM camera_minute_reconciliation")
            assert [r["online"] for r in await as_analyst.fetch("SELECT online FROM camera_status")] == [False]
            assert await as_analyst.fetch("SELECT * FROM fleet_overview")
            assert [r["state"] for r in await as_analyst.fetch("SELECT state FROM camera_minute_reconciliation")] == ["pending"]
            for readable in ("camera_geometry_current", "line_hour_crossings", "zone_day_stats", "camera_minute_ledger", "camera_geometry"):
                await as_analyst.fetch(f"SELECT * FROM {readable}")
            for forbidden in (
                insert.replace("$1", "'cam-x'"), "UPDATE camera_status SET online = true", "DELETE FROM alerts",
                "UPDATE camera_minute_reconciliation SET state = 'match'",
            ):
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await as_analyst.execute(forbidden)
        finally:
            await as_writer.close()
            await as_analyst.close()
    finally:
        await admin.execute(f'DROP OWNED BY "{writer}", "{analyst}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{writer}", "{analyst}"')
        await admin.close()
