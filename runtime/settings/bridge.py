"""Settings of the MQTT -> Kafka bridge (streams/bridge.py)."""

from __future__ import annotations

from pydantic import Field

from runtime.settings.base import KafkaSettings, MqttSettings, SupervisedSettings


class BridgeSettings(MqttSettings, KafkaSettings, SupervisedSettings):
    """The MQTT -> Kafka bridge: what counts as bad input."""

    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    max_clock_skew_s: float = Field(300.0, ge=0)
    ack_interval_s: float = Field(0.2, gt=0)
    # How soon the bridges' consumer group notices a dead bridge and hands
    # its shards to the others (Kafka's group.min.session.timeout.ms is 6 s).
    bridge_session_timeout_s: float = Field(6.0, ge=6)
    # A bridge giving a shard up finishes what Kafka is writing for it this
    # long; what is left comes again from the broker to the next owner.
    bridge_drain_timeout_s: float = Field(10.0, gt=0)
    bridge_metrics_port: int | None = 9101
