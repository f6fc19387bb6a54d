"""Settings of the stream worker (streams/worker.py): its Faust app, lateness, camera status and alerts."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from runtime.settings.base import DatabaseSettings, KafkaSettings, SupervisedSettings


class WorkerSettings(KafkaSettings, DatabaseSettings, SupervisedSettings):
    """The stream worker: dedupe, aggregates, camera status and alerts."""

    # Faust application id: names the consumer group and keys the worker's state in PostgreSQL.
    stream_app_id: str = Field("fleetsight", pattern=r"^[A-Za-z0-9_.-]+$")
    # How soon the group notices a dead worker and hands its partitions over.
    # No longer than runtime.kafka_client.REQUEST_TIMEOUT_S, or Faust's
    # requests (which must outlast it) wait that much longer on a frozen
    # broker. 6 s is Kafka's least (group.min.session.timeout.ms).
    stream_session_timeout_s: float = Field(6.0, ge=6)
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
    # A camera whose node missed more than this share of its live frames between
    # two health reports (busy with the others) opens an overloaded alert.
    missed_frames_alert_share: float = Field(0.2, gt=0, le=1)
    # A camera where more than this share of the people seen overlap another
    # (edge/crowding.py) opens a crowded alert: its counts run low.
    crowding_alert_share: float = Field(0.2, gt=0, le=1)
    # e.g. [{"zone": "checkout", "max": 8, "for_s": 120}]; optional camera_id, object_class
    occupancy_alerts: list[dict[str, Any]] = Field(default_factory=list)
