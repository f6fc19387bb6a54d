"""Where messages travel: MQTT topic layout and Kafka topic names.

Both are part of the contract between stages, so they live here and nowhere
else. A camera id is one MQTT topic level, which is why the schema forbids
``/``, ``+`` and ``#`` in it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Bridges share the cameras by shard: each camera's events, outbox head and
# ack watermark travel under ``{root}/shards/{shard}/...``, and a bridge
# subscribes to whole shards, so one camera's messages always reach one
# bridge and its watermark stays contiguous (Mosquitto's shared
# subscriptions hand messages round-robin, which would split a camera).
# The count is part of the contract: edges and bridges compute the same
# shard from the camera id alone, with no setting to disagree on. 16 lets
# up to 16 bridges share a fleet.
SHARDS = 16


def shard_of(camera_id: str) -> int:
    """The shard a camera's uplink topics live under (CRC-32 of its id, stable everywhere)."""
    return zlib.crc32(camera_id.encode()) % SHARDS


@dataclass(frozen=True)
class MqttTopics:
    """MQTT topics under one root (default ``fleetsight``).

    ``{root}/shards/{k}/cameras/{camera_id}/events``  edge -> bridge, events
                                           (QoS 1); k is ``shard_of(camera_id)``
    ``{root}/shards/{k}/cameras/{camera_id}/outbox``  edge -> bridge, retained:
                                           oldest seq the edge still holds
    ``{root}/shards/{k}/cameras/{camera_id}/ack``     bridge -> edge, retained:
                                           ack watermark
    ``{root}/cameras/{camera_id}/{events,outbox,ack}``  the same, as edges
                                           before shards sent them ("legacy");
                                           bridges still carry them
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
    ``{root}/bridge/status/{lane}``        retained ``online``/``offline`` of
                                           each shard's bridge lane (``0``..
                                           ``15``, ``legacy``)
    """

    root: str = "fleetsight"

    def _uplink(self, camera_id: str, kind: str) -> str:
        return f"{self.root}/shards/{shard_of(camera_id)}/cameras/{camera_id}/{kind}"

    def events(self, camera_id: str) -> str:
        return self._uplink(camera_id, "events")

    def outbox(self, camera_id: str) -> str:
        return self._uplink(camera_id, "outbox")

    def ack(self, camera_id: str) -> str:
        return self._uplink(camera_id, "ack")

    def _legacy(self, camera_id: str, kind: str) -> str:
        return f"{self.root}/cameras/{camera_id}/{kind}"

    def legacy_events(self, camera_id: str) -> str:
        """Where edges from before shards publish events (still bridged)."""
        return self._legacy(camera_id, "events")

    def legacy_outbox(self, camera_id: str) -> str:
        return self._legacy(camera_id, "outbox")

    def legacy_ack(self, camera_id: str) -> str:
        return self._legacy(camera_id, "ack")

    def lane_filters(self, lane: int | None) -> list[str]:
        """What the bridge lane of shard ``lane`` subscribes to (None: the legacy lane)."""
        base = f"{self.root}/cameras" if lane is None else f"{self.root}/shards/{lane}/cameras"
        # Outbox heads and acks first: they set the watermark's floor.
        return [f"{base}/+/outbox", f"{base}/+/ack", f"{base}/+/events"]

    def lane_ack(self, lane: int | None, camera_id: str) -> str:
        """The ack topic of ``camera_id`` as the lane that carries it publishes it."""
        return self.legacy_ack(camera_id) if lane is None else self.ack(camera_id)

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

    def bridge_status(self, lane: int | None) -> str:
        return f"{self.root}/bridge/status/{'legacy' if lane is None else lane}"

    @property
    def all_bridge_status(self) -> str:
        return f"{self.root}/bridge/status/+"

    def all_events(self) -> str:
        return f"{self.root}/shards/+/cameras/+/events"

    def all_acks(self) -> str:
        return f"{self.root}/shards/+/cameras/+/ack"

    def parse(self, topic: str) -> tuple[str, str, int | None] | None:
        """Return ``(camera_id, kind, shard)`` for a camera topic (shard None
        in the legacy layout), else None."""
        parts = topic.split("/")
        if parts[0] != self.root:
            return None
        shard: int | None = None
        if len(parts) == 6 and parts[1] == "shards" and parts[2].isdigit():
            shard = int(parts[2])
            parts = parts[:1] + parts[3:]
        if len(parts) != 4 or parts[1] != "cameras" or not parts[2]:
            return None
        return parts[2], parts[3], shard


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
    def bridge_shards(self) -> str:
        """Empty; its partitions stand for the MQTT shards (and the last for
        the legacy layout), and the bridges' consumer group deals them out."""
        return f"{self.prefix}.bridge.shards"

    @property
    def alerts(self) -> str:
        """Alerts as they open and close, key = alert id (rows of the ``alerts`` table)."""
        return f"{self.prefix}.alerts"
