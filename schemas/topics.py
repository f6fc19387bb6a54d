"""Where messages travel: MQTT topic layout and Kafka topic names.

Both are part of the contract between stages, so they live here and nowhere
else. A camera id is one MQTT topic level, which is why the schema forbids
``/``, ``+`` and ``#`` in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MqttTopics:
    """MQTT topics under one root (default ``fleetsight``).

    ``{root}/cameras/{camera_id}/events``  edge -> bridge, events (QoS 1)
    ``{root}/cameras/{camera_id}/outbox``  edge -> bridge, retained: oldest
                                           seq the edge still holds
    ``{root}/cameras/{camera_id}/ack``     bridge -> edge, retained: ack
                                           watermark
    ``{root}/cameras/{camera_id}/snapshot`` edge, retained, only if the operator
                                           turns snapshots on: a small JPEG
    ``{root}/cameras/{camera_id}/control/model`` cloud -> edge, retained:
                                           the model it should run
    ``{root}/cameras/{camera_id}/model``   edge, retained: the model it runs
                                           and how a rollout went
    ``{root}/sites/{site}/control/model``  cloud -> edges, retained: the
                                           model a whole site should run
    ``{root}/models/{sha256}/{i}``         cloud, retained: chunk i of a
                                           model file (see ``schemas.rollout``)
    ``{root}/bridge/status``               retained ``online``/``offline``
    """

    root: str = "fleetsight"

    def events(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/events"

    def outbox(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/outbox"

    def ack(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/ack"

    def snapshot(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/snapshot"

    def model_desired(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/control/model"

    def site_model_desired(self, site: str) -> str:
        return f"{self.root}/sites/{site}/control/model"

    def model_report(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/model"

    def all_model_reports(self) -> str:
        return f"{self.root}/cameras/+/model"

    def model_chunk(self, sha256: str, index: int) -> str:
        return f"{self.root}/models/{sha256}/{index}"

    @property
    def bridge_status(self) -> str:
        return f"{self.root}/bridge/status"

    def all_events(self) -> str:
        return f"{self.root}/cameras/+/events"

    def all_outbox(self) -> str:
        return f"{self.root}/cameras/+/outbox"

    def all_acks(self) -> str:
        return f"{self.root}/cameras/+/ack"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """Return ``(camera_id, kind)`` for a camera topic, else None."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != self.root or parts[1] != "cameras" or not parts[2]:
            return None
        return parts[2], parts[3]


@dataclass(frozen=True)
class KafkaTopics:
    """Kafka topic names under one prefix (default ``fleetsight``)."""

    prefix: str = "fleetsight"

    @property
    def events(self) -> str:
        """Validated events, key = camera id, one camera = one partition."""
        return f"{self.prefix}.events"

    @property
    def deadletter(self) -> str:
        """Rejected input with its reason (see ``schemas.deadletter``)."""
        return f"{self.prefix}.deadletter"

    @property
    def rows(self) -> str:
        """Batches of absolute SQL row values (see ``schemas.aggregates``)."""
        return f"{self.prefix}.agg.rows"

    @property
    def alerts(self) -> str:
        """Alerts as they open and close, key = alert id (rows of the ``alerts`` table)."""
        return f"{self.prefix}.alerts"
