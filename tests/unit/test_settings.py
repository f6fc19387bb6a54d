"""Settings come from env and YAML, and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import Settings, load_settings


def test_defaults_point_at_local_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("FLEETSIGHT_CONFIG", "FLEETSIGHT_MQTT_URL", "FLEETSIGHT_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert (s.mqtt.host, s.mqtt.port) == ("127.0.0.1", 18830)
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.kafka_topics.events == "fleetsight.events"


def test_env_beats_yaml_beats_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fs.yaml"
    config.write_text("mqtt_url: mqtt://bridge:secret@10.0.0.5:1883\nkafka_partitions: 12\n")
    monkeypatch.setenv("FLEETSIGHT_CONFIG", str(config))
    monkeypatch.setenv("FLEETSIGHT_KAFKA_PARTITIONS", "16")
    s = load_settings()
    assert s.kafka_partitions == 16
    assert (s.mqtt.username, s.mqtt.password, s.mqtt.port) == ("bridge", "secret", 1883)


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSIGHT_KAFKA_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="kafka_partitions"):
        load_settings()


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSIGHT_CONFIG", "/nonexistent/fs.yaml")
    with pytest.raises(FileNotFoundError, match="FLEETSIGHT_CONFIG"):
        Settings()


def test_each_process_reads_only_its_own_settings() -> None:
    from runtime.settings import BridgeSettings, EdgeSettings, SinkSettings, WorkerSettings

    bridge, worker, sink, edge = (set(cls.model_fields) for cls in (BridgeSettings, WorkerSettings, SinkSettings, EdgeSettings))
    assert not any(name.startswith("database") for name in bridge | edge)
    assert not any(name.startswith("mqtt") for name in worker | sink)
    assert not any(name.startswith("kafka") for name in edge)
    assert "occupancy_alerts" in worker and "occupancy_alerts" not in sink | bridge | edge
    assert "max_payload_bytes" in bridge and "max_payload_bytes" not in worker | sink | edge
    # The whole set is each process's set, so one environment configures them all.
    assert bridge | worker | sink | edge <= set(Settings.model_fields)


def test_one_database_url_carries_the_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    from runtime.settings import SinkSettings, WorkerSettings

    secret = tmp_path / "pg.password"
    secret.write_text("s3cr@t:/x\n")
    monkeypatch.setenv("FLEETSIGHT_DATABASE_URL", "postgresql+asyncpg://fleetsight@db:5432/fleetsight")
    monkeypatch.setenv("FLEETSIGHT_DATABASE_PASSWORD_FILE", str(secret))
    for cls in (WorkerSettings, SinkSettings, Settings):
        settings = cls()
        assert make_url(settings.database_url).password == "s3cr@t:/x"
        assert make_url(settings.postgres_dsn).password == "s3cr@t:/x"
        # Children get the file, not the password.
        assert "s3cr" not in settings.env()["FLEETSIGHT_DATABASE_URL"]
    secret.unlink()
    with pytest.raises(ValueError, match="database_password_file"):
        WorkerSettings()


def test_a_copy_with_other_names_names_its_own_topics() -> None:
    """Derived values are worked out again in a copy (a cached property was copied stale: issue 37)."""
    from runtime.settings import Settings

    base = Settings(kafka_topic_prefix="one", mqtt_topic_root="one", mqtt_url="mqtt://127.0.0.1:1883")
    assert (base.kafka_topics.events, base.mqtt_topics.root, base.mqtt.port) == ("one.events", "one", 1883)
    copy = base.model_copy(update={"kafka_topic_prefix": "two", "mqtt_topic_root": "two", "mqtt_url": "mqtt://127.0.0.1:1884"})
    assert (copy.kafka_topics.events, copy.mqtt_topics.root, copy.mqtt.port) == ("two.events", "two", 1884)
    assert base.kafka_topics.events == "one.events"
