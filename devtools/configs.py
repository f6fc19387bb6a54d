"""Service configs for the local services and the tests, rendered from ``deploy/``.

``deploy/`` holds the one copy of each service's settings that docker-compose
uses; running them on loopback only changes what must differ here (ports,
paths, the run-as user). So a setting changed for compose is changed for the
local services and the tests too.
"""

from __future__ import annotations

from pathlib import Path

from runtime.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
MOSQUITTO_CONF = DEPLOY / "mosquitto" / "mosquitto.conf"
KAFKA_ENV = DEPLOY / "kafka" / "kafka.env"
KAFKA_CLUSTER_ENV = DEPLOY / "kafka" / "cluster.env"
KAFKA_SECURE_ENV = DEPLOY / "kafka" / "secure.env"

Overrides = dict[str, "str | None"]


def _directives(lines: list[tuple[str, str]], overrides: Overrides, sep: str) -> list[str]:
    """``(key, value)`` pairs with ``overrides`` applied: replaced, removed (None) or added."""
    out: list[str] = []
    seen: set[str] = set()
    for key, value in lines:
        if key in overrides:
            if key in seen or overrides[key] is None:
                continue
            value = overrides[key]  # type: ignore[assignment]
        seen.add(key)
        out.append(f"{key}{sep}{value}")
    out += [f"{key}{sep}{value}" for key, value in overrides.items() if key not in seen and value is not None]
    return out


def mosquitto_conf(overrides: Overrides, extra: list[str] | None = None, source: Path = MOSQUITTO_CONF) -> str:
    """``deploy/mosquitto/mosquitto.conf`` with ``overrides`` applied, plus ``extra`` lines."""
    lines = []
    for raw in source.read_text().splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            key, _, value = text.partition(" ")
            lines.append((key, value.strip()))
    body = _directives(lines, overrides, " ") + list(extra or [])
    return f"# Rendered from {source.relative_to(REPO_ROOT)}.\n" + "\n".join(body) + "\n"


def kafka_env(source: Path = KAFKA_ENV) -> dict[str, str]:
    """The broker settings compose gives Kafka, as ``server.properties`` keys
    (``KAFKA_FOO_BAR`` is ``foo.bar``, as the apache/kafka image maps them)."""
    props: dict[str, str] = {}
    for raw in source.read_text().splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            name, _, value = text.partition("=")
            props[property_name(name)] = value
    return props


def property_name(variable: str) -> str:
    """``server.properties`` key of an apache/kafka image variable: ``_`` is
    ``.``, ``__`` is ``_`` and ``___`` is ``-`` (the image's own rule)."""
    body = variable.removeprefix("KAFKA_").lower()
    return body.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


def kafka_properties(overrides: Overrides, source: Path = KAFKA_ENV) -> str:
    """``server.properties`` for a broker on loopback: ``deploy/kafka/kafka.env`` with ``overrides``."""
    body = _directives(list(kafka_env(source).items()), overrides, "=")
    return f"# Rendered from {source.relative_to(REPO_ROOT)}.\n" + "\n".join(body) + "\n"
