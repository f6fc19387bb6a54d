"""Camera YAML: good files load, bad ones name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import CameraConfig, ConfigError, SiteConfig, load_camera_config, load_edge_config, load_site_config

GOOD = """
camera_id: cam-door
site: shop-1
source: {uri: video.avi}
lines: [{name: door, points: [[0.1, 0.5], [0.9, 0.5]]}]
zones: [{name: till, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]}]
mqtt: {password_env: CAM_DOOR_PASSWORD}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "camera.yaml"
    path.write_text(text)
    return path


def test_good_file_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_camera_config(write(tmp_path, GOOD))
    assert config.source.uri == str(tmp_path / "video.avi")
    assert config.outbox.path == tmp_path / "outbox-cam-door.sqlite3"
    assert config.gate.enabled and config.detect.confidence is None  # the model family's (edge.detector.thresholds)


def test_the_shipped_example_is_valid() -> None:
    from runtime.settings import REPO_ROOT

    config = load_camera_config(REPO_ROOT / "deploy" / "edge" / "camera.example.yaml")
    assert config.camera_id == "cam-entrance" and config.lines and config.zones
    site = load_site_config(REPO_ROOT / "deploy" / "edge" / "site.example.yaml")
    assert [c.camera_id for c in site.cameras] == ["cam-gate", "cam-dock"] and all(c.detect.fps == 5 for c in site.cameras)


@pytest.mark.parametrize(
    "change, field",
    [
        (("camera_id: cam-door", "camera_id: cam/door"), "camera_id"),
        (("[[0.1, 0.5], [0.9, 0.5]]", "[[0.1, 0.5], [1.9, 0.5]]"), "lines.0.points"),
        (("[[0.1, 0.5], [0.9, 0.5]]", "[[0.1, 0.5], [0.1, 0.5]]"), "lines.0"),
        (("[[0, 0], [0.5, 0], [0.5, 0.5]]", "[[0, 0], [0.5, 0]]"), "zones.0.polygon"),
        (("site: shop-1", "site: shop-1\nthreshold: 3"), "threshold"),
        (("source: {uri: video.avi}", "source: {uri: video.avi, fps: -1}"), "source.fps"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_camera_config(write(tmp_path, GOOD.replace(*change)))
    assert field in str(info.value) and "camera.yaml" in str(info.value)


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_camera_config(write(tmp_path, "camera_id: [unclosed"))
    with pytest.raises(ConfigError, match="no such file"):
        load_camera_config(tmp_path / "nope.yaml")


def test_password_from_env_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_camera_config(write(tmp_path, GOOD))
    monkeypatch.delenv("CAM_DOOR_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="CAM_DOOR_PASSWORD"):
        config.mqtt.password()
    monkeypatch.setenv("CAM_DOOR_PASSWORD", "s3cret")
    assert config.mqtt.password() == "s3cret"


def test_a_config_with_the_old_lost_frames_still_loads_as_seconds() -> None:
    from edge.config import TrackingConfig

    assert TrackingConfig.model_validate({"lost_frames": 30}).lost_s == 1.0


SITE = """
site: depot-3
defaults:
  detect: {fps: 5, confidence: 0.5}
  mqtt: {url: "mqtt://box.local:1883"}
metrics_port: 9120
cameras:
  - camera_id: cam-gate
    source: {uri: "rtsp://10.0.0.21/stream1"}
    detect: {fps: 10}
  - camera_id: cam-dock
    site: depot-3b
    source: {uri: dock.mp4}
"""


def test_site_file_shares_defaults_and_each_camera_keeps_its_own(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    assert isinstance(load_edge_config(path), SiteConfig) and isinstance(load_edge_config(write(tmp_path, GOOD)), CameraConfig)
    site = load_site_config(path)
    gate, dock = site.cameras
    assert (gate.site, dock.site) == ("depot-3", "depot-3b")
    assert (gate.detect.fps, gate.detect.confidence, dock.detect.fps) == (10, 0.5, 5)  # merged key by key
    assert gate.mqtt.url == dock.mqtt.url == "mqtt://box.local:1883"
    assert dock.source.uri == str(tmp_path / "dock.mp4") and gate.source.uri == "rtsp://10.0.0.21/stream1"
    assert gate.outbox.path == tmp_path / "outbox-cam-gate.sqlite3" != dock.outbox.path
    assert site.metrics_port == 9120


@pytest.mark.parametrize(("change", "message"), [
    (("camera_id: cam-dock", "camera_id: cam-gate"), "own camera_id; repeated: cam-gate"),
    (("    detect: {fps: 10}", "    detect: {fps: -1}"), "cameras[0] (cam-gate).detect.fps"),
    (("cameras:", "cams:"), "cams"),
])
def test_bad_site_file_names_the_camera_and_field(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.replace(*change))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_site_config(path)


def test_a_folder_of_camera_files_is_a_site(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(GOOD.replace("cam-door", f"cam-{name}"))
    site = load_site_config(tmp_path)
    assert [c.camera_id for c in site.cameras] == ["cam-a", "cam-b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no camera files"):
        load_site_config(tmp_path / "empty")


def test_an_entrance_says_which_way_enters_and_needs_a_site(tmp_path: Path) -> None:
    door = GOOD.replace("points: [[0.1, 0.5], [0.9, 0.5]]}", "points: [[0.1, 0.5], [0.9, 0.5]], entrance: out}")
    assert load_camera_config(write(tmp_path, door)).lines[0].entrance == "out"
    with pytest.raises(ConfigError, match=r"lines\.0\.entrance: .*in or out, not 'both'"):
        load_camera_config(write(tmp_path, door.replace("entrance: out", "entrance: both")))
    with pytest.raises(ConfigError, match="door is a site entrance, but the camera names no site"):
        load_camera_config(write(tmp_path, door.replace("site: shop-1\n", "")))
