"""Shared pieces of the benchmarks: sample frames, a camera config, MQTT packet sizes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig, GateConfig, LineConfig, ModelConfig, SourceConfig, ZoneConfig
from schemas.topics import MqttTopics

ROOT = Path(__file__).resolve().parent.parent

MEDIA = ROOT / ".services" / "media"
VIDEO = MEDIA / "vtest.avi"


def sample_frames(limit: int | None = None) -> tuple[list[np.ndarray], float]:
    """Decoded frames of the sample video (fetched from Debian's opencv-doc once), and its fps."""
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch-media.sh"), str(MEDIA)], check=True)
    cap = cv2.VideoCapture(str(VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def parse_settings(items: list[str]) -> dict[str, object]:
    """``--set``-style ``SETTING=VALUE`` items (dotted camera settings, values in YAML) as a dict."""
    import yaml

    settings: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{item}: expected SETTING=VALUE, e.g. model.input_size=320")
        settings[name] = yaml.safe_load(value)
    return settings


def camera_config(gate: bool, threads: int | None = None) -> CameraConfig:
    """The sample scene: a line across the square and a zone on its left half."""
    return CameraConfig(
        camera_id="cam-bench",
        site="bench",
        source=SourceConfig(uri=str(VIDEO), realtime=False),
        model=ModelConfig(threads=threads),
        gate=GateConfig(enabled=gate),
        lines=[LineConfig(name="crosswalk", points=((0.05, 0.55), (0.95, 0.55)))],
        zones=[ZoneConfig(name="left", polygon=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)])],
    )


def mqtt_publish_size(topic: str, payload: bytes) -> int:
    """Bytes of a QoS 1 PUBLISH packet carrying ``payload`` on ``topic``."""
    body = 2 + len(topic.encode()) + 2 + len(payload)  # topic length, topic, packet id, payload
    remaining_length_bytes = 1 if body < 128 else 2 if body < 16384 else 3 if body < 2097152 else 4
    return 1 + remaining_length_bytes + body


EVENTS_TOPIC = MqttTopics().events("cam-bench")
