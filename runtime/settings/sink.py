"""Settings of the Kafka -> PostgreSQL sink and the reconciler (sinks/)."""

from __future__ import annotations

from pydantic import Field

from runtime.settings.base import DatabaseSettings, KafkaSettings, SupervisedSettings
from schemas.sites import SiteRule


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
    # Per site: its time zone, when its day's count starts again, the people it
    # may hold (schemas/sites.py), e.g. FLEETSIGHT_SITES='{"shop-1": {"time_zone":
    # "Europe/Berlin", "day_starts": "04:00", "capacity": 120, "capacity_for_s": 300}}'.
    # A site not named: UTC midnight, no capacity alert.
    sites: dict[str, SiteRule] = Field(default_factory=dict)
    # How often the sites with a capacity are checked against it.
    capacity_check_s: float = Field(10.0, gt=0)
