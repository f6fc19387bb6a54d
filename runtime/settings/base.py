"""What the processes' settings share: the typed base, the sources, MQTT, Kafka, the database."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas.aggregates import RESOLUTIONS, TIME_PARTITIONED
from schemas.topics import KafkaTopics, MqttTopics

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

# Ports of the local services: not the well-known ones, so a system broker or
# cluster on the same machine cannot clash with ours.
MQTT_PORT = 18830
KAFKA_PORT = 19092
POSTGRES_PORT = 15432

BRIDGE_USER = "fleetsight-bridge"

# 90 days of minutes, two years of hours, days for ever (README "Retention").
RETENTION_DEFAULTS = {"minute": 90, "hour": 730, "day": 0}


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

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; what is worked out from the settings (``mqtt``, ``kafka_topics``...) is worked out again.

        pydantic copies the instance's ``__dict__``, where a ``cached_property``
        keeps its value: a copy with another topic prefix went on naming the
        old topics (the stream benchmark wrote a backlog into the wrong topic
        while its workers, given the new prefix in their environment, waited
        on theirs; issue 37).
        """
        copied = super().model_copy(update=update, deep=deep)
        for cls in type(self).__mro__:
            for name, attr in vars(cls).items():
                if isinstance(attr, cached_property):
                    copied.__dict__.pop(name, None)
        return copied

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
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
    # Beyond one machine: with a user name, this process logs in to Kafka with
    # SASL/SCRAM-SHA-512 over TLS as that user (each process its own; what
    # each may touch: `fleetsight kafka acls`). Without, plain TCP, for a
    # cluster on loopback or a private network of its own.
    kafka_username: str | None = None
    kafka_password_file: Path | None = None
    kafka_ca_file: Path | None = Field(None, description="CA bundle to verify the brokers' certificates with (default: the system's)")

    @cached_property
    def kafka_topics(self) -> KafkaTopics:
        return KafkaTopics(self.kafka_topic_prefix)

    @model_validator(mode="after")
    def _kafka_login(self) -> KafkaSettings:
        if self.kafka_username and self.kafka_password_file is None:
            raise ValueError("kafka_username is set: kafka_password_file must name the file with its password")
        return self


class DatabaseSettings(BaseConfig):
    """One database URL: with ``database_password_file`` set, the password is read from it
    when the settings load, so every reader of ``database_url`` gets a URL that logs in."""

    database_url: str = f"postgresql+asyncpg://fleetsight@127.0.0.1:{POSTGRES_PORT}/fleetsight"
    # Keeps the password out of the URL and the environment (e.g. a Docker secret).
    database_password_file: Path | None = None
    # TLS to the database: "auto" is verify-full (certificate and host name
    # checked, the CA from PGSSLROOTCERT or ~/.postgresql/root.crt) unless the
    # database is on loopback; "off" demands none (the driver still uses TLS
    # when the server offers it), for a private network of one host such as
    # compose's. An ssl= or sslmode= in the URL itself wins.
    database_tls: Literal["auto", "off", "require", "verify-full"] = "auto"
    # Days each time-partitioned table keeps (sinks/partitions.py), by
    # resolution ("minute", "hour", "day") or by table name, a name winning
    # over its resolution; 0 keeps for ever. What is given is merged over
    # the defaults, e.g. '{"minute": 30, "camera_minute_health": 7}'.
    retention_days: dict[str, int] = Field(default_factory=lambda: dict(RETENTION_DEFAULTS))
    # Partitions are made this far ahead of today.
    partitions_ahead_days: int = Field(7, ge=1)
    partition_maintenance_every_s: float = Field(3600.0, gt=0)

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(RESOLUTIONS) - set(TIME_PARTITIONED))
        if unknown:
            raise ValueError(
                f"retention_days: {', '.join(unknown)} is neither a resolution ({', '.join(RESOLUTIONS)}) "
                f"nor a partitioned table ({', '.join(sorted(TIME_PARTITIONED))})"
            )
        if any(days < 0 for days in value.values()):
            raise ValueError("retention_days: days must be 0 (keep for ever) or more")
        return {**RETENTION_DEFAULTS, **value}

    def retention_of(self, table: str) -> int:
        """Days ``table`` keeps its rows (0: for ever)."""
        return self.retention_days.get(table, self.retention_days[TIME_PARTITIONED[table][1]])

    @property
    def shortest_retention_s(self) -> float | None:
        """The shortest retention of any partitioned table (None: all kept): an event older lands nowhere whole."""
        kept = [days for days in (self.retention_of(t) for t in TIME_PARTITIONED) if days]
        return min(kept) * 86400.0 if kept else None

    @model_validator(mode="after")
    def _resolve_password(self) -> DatabaseSettings:
        if self.database_password_file is not None:
            try:
                password = self.database_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"database_password_file: cannot read {self.database_password_file}: {exc}") from exc
            self.database_url = with_password(self.database_url, password)
        self.database_url = with_tls(self.database_url, self.database_tls)
        return self

    @property
    def postgres_dsn(self) -> str:
        """``database_url`` as plain ``postgresql://`` (asyncpg, psql), password included."""
        # SQLAlchemy hands asyncpg ``ssl=``; a DSN says ``sslmode=``.
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1).replace("?ssl=", "?sslmode=").replace("&ssl=", "&sslmode=")

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


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def with_tls(url: str, mode: str) -> str:
    """``url`` with ``ssl=<mode>`` added for SQLAlchemy's asyncpg driver; ``auto``
    is verify-full off loopback and nothing on it. A URL that says already is kept."""
    parts = urlsplit(url)
    if "ssl=" in parts.query or "sslmode=" in parts.query:
        return url
    if mode == "auto":
        host = parts.hostname or ""
        mode = "off" if host in LOOPBACK or host.startswith("/") or not host else "verify-full"
    if mode == "off":
        return url
    query = f"{parts.query}&ssl={mode}" if parts.query else f"ssl={mode}"
    return urlunsplit(parts._replace(query=query))


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
