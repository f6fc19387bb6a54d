"""Settings of each FleetSight process, built from one typed base.

Each process reads only what it uses: the edge (:class:`EdgeSettings`), the
bridge (:class:`BridgeSettings`), the stream worker (:class:`WorkerSettings`)
and the sink (:class:`SinkSettings`) share the groups they have in common
(MQTT, Kafka, the database). :class:`Settings` holds them all, for the
commands that start or manage several processes.

Values come from, highest priority first: environment variables
(``FLEETSIGHT_<FIELD>``), the YAML file named by ``FLEETSIGHT_CONFIG``, and
the defaults below, which point at the local services that
``python -m devtools services up`` starts. Names are the same in every class,
so one environment or file configures a whole deployment.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas.topics import KafkaTopics, MqttTopics

REPO_ROOT = Path(__file__).resolve().parent.parent

# Ports of the local services: not the well-known ones, so a system broker or
# cluster on the same machine cannot clash with ours.
MQTT_PORT = 18830
KAFKA_PORT = 19092
POSTGRES_PORT = 15432

BRIDGE_USER = "fleetsight-bridge"


class MqttAddress:
    """Parts of an ``mqtt://user:password@host:port`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None


class BaseConfig(BaseSettings):
    """What every process has: where its sources are, where its local state lives."""

    model_config = SettingsConfigDict(env_prefix="FLEETSIGHT_", extra="ignore")

    services_dir: Path = REPO_ROOT / ".services"
    # Prometheus /metrics of each process; loopback unless told otherwise.
    metrics_bind: str = "127.0.0.1"

    @field_validator("services_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("FLEETSIGHT_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"FLEETSIGHT_CONFIG points at {config_file!r}, which is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue  # unset: the child uses the default too
            # Lists and mappings are read back from the environment as JSON.
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            out[f"FLEETSIGHT_{name.upper()}"] = text
        return out


class MqttSettings(BaseConfig):
    """The broker, and this process's login to it."""

    mqtt_url: str = f"mqtt://127.0.0.1:{MQTT_PORT}"
    # Credentials of this process (user:password in the URL wins). The
    # defaults are the bridge's, as the local services provision them.
    mqtt_username: str | None = BRIDGE_USER
    mqtt_password_file: Path | None = None  # default: <services_dir>/secrets/<user>.password
    mqtt_ca_file: Path | None = Field(None, description="CA bundle to verify the broker with (mqtts://)")
    mqtt_topic_root: str = Field("fleetsight", pattern=r"^[A-Za-z0-9_.-]+$")

    @cached_property
    def mqtt(self) -> MqttAddress:
        return MqttAddress(self.mqtt_url)

    @cached_property
    def mqtt_topics(self) -> MqttTopics:
        return MqttTopics(self.mqtt_topic_root)

    def mqtt_credentials(self) -> tuple[str | None, str | None]:
        """(username, password) for this process; password None if none is set up."""
        address = self.mqtt
        if address.username:
            return address.username, address.password
        user = self.mqtt_username
        if not user:
            return None, None
        path = self.mqtt_password_file or self.services_dir / "secrets" / f"{user}.password"
        try:
            return user, path.read_text().strip()
        except FileNotFoundError:
            return user, None

    def camera_password_file(self, camera_id: str) -> Path:
        """Where a camera's password is kept when its config names none."""
        return self.services_dir / "secrets" / "cameras" / f"{camera_id}.password"

    def camera_password(self, camera_id: str) -> str | None:
        """A camera's password from :meth:`camera_password_file`, if it has one."""
        try:
            return self.camera_password_file(camera_id).read_text().strip()
        except FileNotFoundError:
            return None


class KafkaSettings(BaseConfig):
    """The cluster and FleetSight's topics on it."""

    kafka_bootstrap: str = f"127.0.0.1:{KAFKA_PORT}"
    kafka_topic_prefix: str = Field("fleetsight", pattern=r"^[A-Za-z0-9_.-]+$")
    kafka_partitions: int = Field(8, ge=1)

    @cached_property
    def kafka_topics(self) -> KafkaTopics:
        return KafkaTopics(self.kafka_topic_prefix)


class DatabaseSettings(BaseConfig):
    """One database URL: with ``database_password_file`` set, the password is read from it
    when the settings load, so every reader of ``database_url`` gets a URL that logs in."""

    database_url: str = f"postgresql+asyncpg://fleetsight@127.0.0.1:{POSTGRES_PORT}/fleetsight"
    # Keeps the password out of the URL and the environment (e.g. a Docker secret).
    database_password_file: Path | None = None

    @model_validator(mode="after")
    def _resolve_password(self) -> DatabaseSettings:
        if self.database_password_file is not None:
            try:
                password = self.database_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"database_password_file: cannot read {self.database_password_file}: {exc}") from exc
            self.database_url = with_password(self.database_url, password)
        return self

    @property
    def postgres_dsn(self) -> str:
        """``database_url`` as plain ``postgresql://`` (asyncpg, psql), password included."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def env(self) -> dict[str, str]:
        out = super().env()
        if self.database_password_file is not None:
            # The child reads the file itself: the password stays out of its environment.
            out["FLEETSIGHT_DATABASE_URL"] = with_password(self.database_url, None)
        return out


class SupervisedSettings(BaseConfig):
    """Processes with a stall watchdog (runtime/watchdog.py): bridge, worker, sink."""

    # Work waiting this long without progress makes the process exit (70) for
    # its supervisor to restart it; /health says 503 from half of it.
    stall_timeout_s: float = Field(60.0, ge=2)


class EdgeSettings(MqttSettings):
    """A camera node or the simulated fleet."""

    simulator_metrics_port: int | None = 9104


class BridgeSettings(MqttSettings, KafkaSettings, SupervisedSettings):
    """The MQTT -> Kafka bridge: what counts as bad input."""

    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    max_clock_skew_s: float = Field(300.0, ge=0)
    ack_interval_s: float = Field(0.2, gt=0)
    bridge_metrics_port: int | None = 9101


class WorkerSettings(KafkaSettings, DatabaseSettings, SupervisedSettings):
    """The stream worker: dedupe, aggregates, camera status and alerts."""

    # Faust application id: names the consumer group and keys the worker's state in PostgreSQL.
    stream_app_id: str = Field("fleetsight", pattern=r"^[A-Za-z0-9_.-]+$")
    # How soon the group notices a dead worker and hands its partitions over.
    stream_session_timeout_s: float = Field(15.0, ge=6)
    # Events older than this (event time against arrival time in Kafka) go to
    # the dead-letter topic instead of reopening their minute.
    late_after_s: float = Field(24 * 3600.0, gt=0)
    worker_metrics_port: int | None = 9102

    # Camera status and alerts (see streams/status.py).
    offline_after_s: float = Field(120.0, gt=0)
    alert_clear_s: float = Field(60.0, ge=0)
    backlog_alert_min: int = Field(100, ge=1)
    backlog_alert_reports: int = Field(3, ge=2)
    status_sweep_s: float = Field(10.0, gt=0)
    # A camera clock further than this off the cloud's opens a clock_skew alert.
    clock_skew_alert_s: float = Field(5.0, gt=0)
    # e.g. [{"zone": "checkout", "max": 8, "for_s": 120}]; optional camera_id, object_class
    occupancy_alerts: list[dict[str, Any]] = Field(default_factory=list)


class SinkSettings(KafkaSettings, DatabaseSettings, SupervisedSettings):
    """The Kafka -> PostgreSQL writer, and the reconciler beside it (sinks/reconcile.py)."""

    sink_metrics_port: int | None = 9103
    # How often the camera-minutes of the last reconcile_window_s (and any
    # whose figures changed in it) are checked against the cameras' ledgers.
    reconcile_every_s: float = Field(30.0, gt=0)
    reconcile_window_s: float = Field(2 * 3600.0, gt=0)
    # A difference younger than this is "pending" (rows still on their way);
    # older, "mismatch", and an alert for its camera.
    reconcile_grace_s: float = Field(300.0, ge=0)


class Settings(EdgeSettings, BridgeSettings, WorkerSettings, SinkSettings):
    """Every process's settings, for the commands that start or manage several
    (the CLI, rollout, local tooling, tests); one of these is also each process's."""

    # The operator's login, for `fleetsight model ...` (it writes to every camera's control topics).
    mqtt_admin_password_file: Path | None = None  # default: <services_dir>/secrets/fleetsight-admin.password


def with_password(url: str, password: str | None) -> str:
    """``url`` with its password replaced (``None``: removed)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0] if "@" in parts.netloc else ""
    if user and password is not None:
        login = f"{user}:{quote(password, safe='')}@"
    else:
        login = f"{user}@" if user else ""
    return urlunsplit(parts._replace(netloc=login + host))


def load_settings(**overrides: Any) -> Settings:
    """Read all the settings from the environment and the optional YAML file."""
    return Settings(**overrides)
