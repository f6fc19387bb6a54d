"""Settings of a camera node or the simulated fleet (edge/)."""

from __future__ import annotations

from runtime.settings.base import MqttSettings


class EdgeSettings(MqttSettings):
    """A camera node or the simulated fleet."""

    simulator_metrics_port: int | None = 9104
