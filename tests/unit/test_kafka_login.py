"""Each process's Kafka login and the ACLs that say what it may touch."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.configs import KAFKA_CLUSTER_ENV, KAFKA_SECURE_ENV, kafka_env
from fleetsight.kafka_users import USERS, acl_script, acls
from runtime.kafka_admin import replication
from runtime.kafka_client import kafka_security
from runtime.settings import Settings


def test_plain_tcp_without_a_user_and_scram_over_tls_with_one(tmp_path: Path) -> None:
    assert kafka_security(Settings()) == {}
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    login = kafka_security(Settings(kafka_username="fleetsight-bridge", kafka_password_file=secret))
    assert (login["security_protocol"], login["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (login["sasl_plain_username"], login["sasl_plain_password"]) == ("fleetsight-bridge", "s3cret")
    with pytest.raises(ValueError, match="kafka_password_file"):
        Settings(kafka_username="fleetsight-bridge")


def test_each_process_gets_only_its_own_topics_and_group() -> None:
    settings = Settings(kafka_topic_prefix="fs", stream_app_id="fs-app")
    rules = acls(settings)
    allowed = {(r.user, r.resource, r.name, op) for r in rules for op in r.operations}
    bridge, worker, sink = USERS["bridge"], USERS["worker"], USERS["sink"]
    assert (bridge, "topic", "fs.events", "Write") in allowed
    assert (worker, "topic", "fs.events", "Read") in allowed and (worker, "group", "fs-app", "Read") in allowed
    assert (sink, "topic", "fs.agg.rows", "Read") in allowed and (sink, "group", "fs-sink", "Read") in allowed
    # Nobody else writes events, and the sink reads nothing but row batches.
    assert {u for u, res, name, op in allowed if name == "fs.events" and op == "Write"} == {bridge}
    assert {name for u, res, name, op in allowed if u == sink and op == "Read"} == {"fs.agg.rows", "fs-sink"}
    assert all(r.prefixed == (r.name == "fs.") for r in rules)
    assert "kafka-acls.sh --bootstrap-server" in acl_script(settings)


def test_replication_follows_the_cluster_and_its_config_agrees() -> None:
    assert replication(1) == (1, {"min.insync.replicas": "1"})
    assert replication(3) == (3, {"min.insync.replicas": "2"})
    cluster = kafka_env(KAFKA_CLUSTER_ENV)
    assert cluster["offsets.topic.replication.factor"] == "3" and cluster["min.insync.replicas"] == "2"
    assert cluster["transaction.state.log.replication.factor"] == "3"
    secure = kafka_env(KAFKA_SECURE_ENV)
    assert secure["allow.everyone.if.no.acl.found"] == "false"
    assert secure["listener.name.controller.ssl.client.auth"] == "required"
