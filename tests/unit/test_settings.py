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
