"""Deployment files are valid as shipped."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from runtime.settings import REPO_ROOT


def test_docker_compose_config_is_valid() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is installed by `make deps`; CI must check the compose file")
        pytest.skip("docker-compose not installed (run `make deps`)")
    result = subprocess.run([compose, "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    cluster = [compose, "-f", str(REPO_ROOT / "docker-compose.yml"), "-f", str(REPO_ROOT / "docker-compose.cluster.yml")]
    result = subprocess.run([*cluster, "config"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = [services[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")]
    assert sorted(n["KAFKA_NODE_ID"] for n in nodes) == ["1", "2", "3"]
    assert len({n["CLUSTER_ID"] for n in nodes}) == 1 and all(n["KAFKA_MIN_INSYNC_REPLICAS"] == "2" for n in nodes)
    for name in ("bridge", "worker", "sink"):
        assert services[name]["environment"]["FLEETSIGHT_KAFKA_BOOTSTRAP"] == "kafka:9092,kafka-2:9092,kafka-3:9092"


def test_compose_runs_every_stage_and_ships_no_secret() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mosquitto", "kafka", "postgres", "migrate", "bridge", "worker", "sink", "grafana", "edge-sim"} <= set(services)
    assert services["edge-sim"]["profiles"] == ["edge"]
    # Passwords come from files under ./secrets, which git ignores.
    assert all(spec["file"].startswith("./secrets/") for spec in compose["secrets"].values())
    assert "secrets/" in (REPO_ROOT / ".gitignore").read_text().split()
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    for name, service in services.items():
        for key, _value in (service.get("environment") or {}).items():
            assert "PASSWORD" not in key or key.endswith("_FILE") or key.endswith("__FILE"), (name, key)


def test_every_image_and_base_can_be_swapped_without_editing_the_files() -> None:
    import re

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    images = {name: s["image"] for name, s in compose["services"].items() if "image" in s}
    assert images and all(re.fullmatch(r"\$\{FLEETSIGHT_(?:[A-Z]+_)?IMAGE:-[^}]+\}", i) for i in images.values()), images
    assert compose["x-fleetsight"]["build"]["args"]["PYTHON_IMAGE"].startswith("${FLEETSIGHT_PYTHON_IMAGE:-")
    froms = [line for line in (REPO_ROOT / "deploy" / "Dockerfile").read_text().splitlines() if line.startswith("FROM")]
    assert froms == ["FROM ${PYTHON_IMAGE}"]


def test_shipped_broker_config_requires_logins_and_our_acl() -> None:
    from fleetsight.mqtt_users import ACL

    conf = (REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().split("\n")
    assert "allow_anonymous false" in conf and any(line.startswith("acl_file") for line in conf)
    assert (REPO_ROOT / "deploy" / "mosquitto" / "acl").read_text() == ACL


def test_local_services_render_the_shipped_broker_configs() -> None:
    from devtools.configs import KAFKA_ENV, MOSQUITTO_CONF, kafka_env, kafka_properties, mosquitto_conf

    shipped = [line for line in MOSQUITTO_CONF.read_text().splitlines() if line and not line.startswith("#")]
    local = mosquitto_conf({"listener": "18830 127.0.0.1", "acl_file": None}).splitlines()
    for line in shipped:
        key = line.split()[0]
        if key == "listener":
            assert "listener 18830 127.0.0.1" in local
        elif key == "acl_file":
            assert not any(x.startswith("acl_file") for x in local)
        else:
            assert line in local, line
    props = kafka_properties({"log.dirs": "/tmp/k"}).splitlines()
    assert "log.dirs=/tmp/k" in props
    assert {f"{k}={v}" for k, v in kafka_env().items()} <= set(props)
    # compose passes the same file to its broker and overrides only what differs in containers.
    kafka = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["kafka"]
    assert (REPO_ROOT / kafka["env_file"]).resolve() == KAFKA_ENV
    assert not set(kafka["environment"]) & {line.split("=")[0] for line in KAFKA_ENV.read_text().splitlines() if "=" in line}
