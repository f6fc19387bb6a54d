"""Kafka across machines: SASL/SCRAM over TLS, one user per process, ACLs that deny by default.

A Kafka node of the test's own, configured from ``deploy/kafka/secure.env``
(TLS with a CA the test makes, SCRAM users made when its storage is
formatted, the ACLs of ``fleetsight kafka acls`` applied with Kafka's own
``kafka-acls`` tool): no login, a wrong password, and one process's login
used for another's work are all refused, and the whole pipeline runs with
each process logged in as itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from devtools.certs import make_certs
from devtools.configs import KAFKA_SECURE_ENV, kafka_env
from devtools.ports import free_port_run
from devtools.services import Kafka
from fleetsight.kafka_users import USERS, acls
from runtime.kafka_client import MECHANISM, kafka_security
from runtime.settings import Settings
from tests.support import Stack, assert_sql_matches, event, publish, truth, with_sentinel

pytestmark = pytest.mark.integration

ADMIN = "admin"


@dataclass
class SecureKafka:
    bootstrap: str
    ca: Path
    passwords: dict[str, Path]  # user -> password file

    def login(self, settings: Settings, user: str, password_file: Path | None = None) -> Settings:
        """``settings`` logged in to this Kafka as ``user``."""
        return settings.model_copy(update={
            "kafka_bootstrap": self.bootstrap, "kafka_username": user,
            "kafka_password_file": password_file or self.passwords[user], "kafka_ca_file": self.ca,
        })


@pytest.fixture(scope="module")
def secure_kafka(services: Settings) -> Iterator[SecureKafka]:
    # Not pytest's tmp_path: the node's key store must stay out of shared
    # folders, and its path short.
    root = Path(tempfile.mkdtemp(prefix="fleetsight-kafka-sec-"))
    certs = make_certs(root / "certs", "fleetsight-kafka-node")
    port = free_port_run(2)
    users = [ADMIN, *USERS.values()]
    passwords = {user: f"{user}-{i}-{time.time_ns()}" for i, user in enumerate(users)}
    files = {}
    for user, password in passwords.items():
        files[user] = root / f"{user}.password"
        files[user].write_text(password)
        files[user].chmod(0o600)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", services_dir=root / "services")
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{passwords[ADMIN]}";'
    node = Kafka(settings, overrides={
        **kafka_env(KAFKA_SECURE_ENV),
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
        "ssl.keystore.location": str(certs.keystore),
        "ssl.truststore.location": str(certs.ca),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
    }, scram_users=passwords)
    try:
        node.up()
        admin_config = root / "admin.properties"
        admin_config.write_text(
            f"security.protocol=SASL_SSL\nsasl.mechanism={MECHANISM}\nsasl.jaas.config={jaas}\n"
            f"ssl.truststore.type=PEM\nssl.truststore.location={certs.ca}\n"
        )
        yield SecureKafka(settings.kafka_bootstrap, certs.ca, files)
    finally:
        node.down()
        shutil.rmtree(root, ignore_errors=True)


def grant(secure: SecureKafka, settings: Settings) -> None:
    """The pipeline's ACLs for ``settings``' topics and groups, applied with kafka-acls as an operator would."""
    node = Kafka(settings.model_copy(update={"kafka_bootstrap": secure.bootstrap}))
    config = secure.passwords[ADMIN].parent / "admin.properties"
    for rule in acls(settings):
        node.tool("kafka.admin.AclCommand", "--bootstrap-server", secure.bootstrap, "--command-config", str(config), *rule.args())


async def refused(client: AIOKafkaProducer | AIOKafkaConsumer, timeout: float = 30) -> bool:
    """True when the client cannot start (no connection, or a login the broker turns down)."""
    try:
        await asyncio.wait_for(client.start(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return True
    finally:
        await client.stop()
    return False


async def test_no_login_and_a_wrong_password_are_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    base = Settings(kafka_bootstrap=secure_kafka.bootstrap)
    # Plain TCP to a TLS listener: no handshake, no metadata.
    assert await refused(AIOKafkaProducer(bootstrap_servers=secure_kafka.bootstrap, request_timeout_ms=5000), timeout=15)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    bad = secure_kafka.login(base, USERS["bridge"], wrong)
    assert await refused(AIOKafkaProducer(bootstrap_servers=bad.kafka_bootstrap, **kafka_security(bad)))
    # The right password works (so the refusals above are about the login).
    good = secure_kafka.login(base, USERS["bridge"])
    assert not await refused(AIOKafkaProducer(bootstrap_servers=good.kafka_bootstrap, **kafka_security(good)))


async def test_a_process_cannot_do_another_ones_work(secure_kafka: SecureKafka, stack: Stack) -> None:
    stack.settings = secure_kafka.login(stack.settings, ADMIN)
    await asyncio.to_thread(grant, secure_kafka, stack.settings)
    from runtime.kafka_admin import ensure_topics

    await ensure_topics(stack.settings)
    topics = stack.settings.kafka_topics
    sink = secure_kafka.login(stack.settings, USERS["sink"])
    bridge = secure_kafka.login(stack.settings, USERS["bridge"])
    # The sink's login may not write events (only the bridge does).
    producer = AIOKafkaProducer(bootstrap_servers=sink.kafka_bootstrap, **kafka_security(sink))
    await producer.start()
    try:
        with pytest.raises(KafkaError) as denied:
            await asyncio.wait_for(producer.send_and_wait(topics.events, b"{}", key=b"x"), 30)
        assert "Authorization" in type(denied.value).__name__, denied.value
    finally:
        await producer.stop()
    # The bridge's login may not read the row batches in the sink's group.
    consumer = AIOKafkaConsumer(
        topics.rows, bootstrap_servers=bridge.kafka_bootstrap, group_id=f"{stack.settings.kafka_topic_prefix}-sink",
        **kafka_security(bridge),
    )
    try:
        with pytest.raises(KafkaError) as denied:
            await asyncio.wait_for(consumer.start(), 30)  # joining the group is what is refused
        assert "Authorization" in type(denied.value).__name__, denied.value
    finally:
        await consumer.stop()


async def test_the_pipeline_runs_with_a_login_of_each_process(secure_kafka: SecureKafka, stack: Stack) -> None:
    stack.settings = secure_kafka.login(stack.settings, ADMIN)  # for the stack's own clean-up
    await asyncio.to_thread(grant, secure_kafka, stack.settings)
    for component in ("bridge", "worker", "sink"):
        stack.start(component, settings=secure_kafka.login(stack.settings, USERS[component]))
    await stack.wait_bridge_online(90)
    cam = "sec-kafka-1"
    now = int(time.time() * 1000)
    events = [event(cam, seq, now + seq) for seq in range(1, 21)]
    with_sentinel(cam, 21, events)
    publish(stack.settings, [(stack.settings.mqtt_topics.events(cam), json.dumps(events).encode())])
    await assert_sql_matches(stack, truth(events), [cam], timeout=180)
    stack.assert_running()
