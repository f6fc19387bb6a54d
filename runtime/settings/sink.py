"""Settings of the Kafka -> PostgreSQL sink and the reconciler (sinks/)."""

from __future__ import annotations

from pydantic import Field

from runtime.settings.base import DatabaseSettings, KafkaSettings, SupervisedSettings


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
