"""Settings of each FleetSight process, built from one typed base (``base.py``).

Each process reads only what it uses: the edge (:class:`EdgeSettings`), the
bridge (:class:`BridgeSettings`), the stream worker (:class:`WorkerSettings`),
the sink (:class:`SinkSettings`) and the alert notifier
(:class:`NotifierSettings`) share the groups they have in common (MQTT,
Kafka, the database). :class:`Settings` holds them all, for the commands
that start or manage several processes. Each stage's own settings are in
the module named for it (``edge.py``, ``bridge.py``, ``worker.py``,
``sink.py``, ``notifier.py``); what they share is in ``base.py``.

Values come from, highest priority first: environment variables
(``FLEETSIGHT_<FIELD>``), the YAML file named by ``FLEETSIGHT_CONFIG``, and
the defaults below, which point at the local services that
``python -m devtools services up`` starts. Names are the same in every class,
so one environment or file configures a whole deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.settings.base import (
    BRIDGE_USER,
    KAFKA_PORT,
    MQTT_PORT,
    POSTGRES_PORT,
    REPO_ROOT,
    BaseConfig,
    DatabaseSettings,
    KafkaSettings,
    MqttAddress,
    MqttSettings,
    SupervisedSettings,
    with_password,
)
from runtime.settings.bridge import BridgeSettings
from runtime.settings.edge import EdgeSettings
from runtime.settings.notifier import NotifierSettings, Webhook
from runtime.settings.sink import SinkSettings
from runtime.settings.worker import WorkerSettings

__all__ = [
    "BRIDGE_USER", "KAFKA_PORT", "MQTT_PORT", "POSTGRES_PORT", "REPO_ROOT",
    "BaseConfig", "BridgeSettings", "DatabaseSettings", "EdgeSettings", "KafkaSettings", "MqttAddress", "MqttSettings",
    "NotifierSettings", "Settings", "SinkSettings", "SupervisedSettings", "Webhook", "WorkerSettings", "load_settings",
    "with_password",
]


class Settings(EdgeSettings, BridgeSettings, WorkerSettings, SinkSettings, NotifierSettings):
    """Every process's settings, for the commands that start or manage several
    (the CLI, rollout, local tooling, tests); one of these is also each process's."""

    # The operator's login, for `fleetsight model ...` (it writes to every camera's control topics).
    mqtt_admin_password_file: Path | None = None  # default: <services_dir>/secrets/fleetsight-admin.password


def load_settings(**overrides: Any) -> Settings:
    """Read all the settings from the environment and the optional YAML file."""
    return Settings(**overrides)
