"""Camera configuration: one YAML file per camera, validated with clear messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.model_spec import DEFAULT_MODEL, canonical_name, registry
from schemas.codec import load_schema

_DEFS = load_schema("event")["$defs"]
Ident = Annotated[str, Field(pattern=_DEFS["ident"]["pattern"])]
Name = Annotated[str, Field(pattern=_DEFS["name"]["pattern"])]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Fraction, Fraction]


class ConfigError(ValueError):
    """A camera file that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    uri: str = Field(description="video file path, rtsp:// or http:// URL, or a device index such as 0")
    loop: bool = False
    realtime: bool = Field(True, description="pace a file at its own fps; false = as fast as possible")
    fps: float | None = Field(None, gt=0, le=240)
    stall_s: float = Field(2.0, gt=0, le=60, description="a live stream that sends no frame this long is stalled and reopened")
    reconnect_max_s: float = Field(2.0, gt=0, le=300, description="longest wait between attempts to reopen a live stream")


class ModelUpdateConfig(_Strict):
    """Models rolled out from the cloud (``fleetsight model rollout``)."""

    enabled: bool = Field(True, description="false: refuse every rollout to this camera")
    store: Path | None = Field(None, description="where rolled-out models are kept; default: models-<camera_id>/ beside the outbox")
    probation_frames: int = Field(30, ge=1, description="detector runs a new model is watched for before it is kept")
    max_slowdown: float = Field(3.0, gt=1.0, description="roll back if the new model's median inference time is this many times the old one's")


class ModelConfig(_Strict):
    name: str = Field(DEFAULT_MODEL, description="architecture, a key of edge/models/models.json (README, \"Which detector for which camera\")")
    path: Path | None = Field(None, description="a file of that architecture: a brought one, or another of a shipped one (needs sha256)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    providers: list[str] | None = None
    threads: int | None = Field(None, ge=1, le=64)
    letterbox: bool = True
    input_size: int | None = Field(
        None, ge=128, le=1280, multiple_of=32,
        description="longest side the frame is scaled to for the model (default: the model's, 416); smaller is faster and misses small objects",
    )
    updates: ModelUpdateConfig = Field(default_factory=ModelUpdateConfig)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if canonical_name(name) not in registry():
            raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(registry()))}")
        return name

    @model_validator(mode="after")
    def _brought_file(self) -> ModelConfig:
        entry = registry()[canonical_name(self.name)]
        if entry.get("file") is None and (self.path is None or self.sha256 is None):
            raise ValueError(
                f"{self.name} ({entry['family']}) does not ship with FleetSight: give the file you bring as model.path "
                "and its model.sha256 (README, \"Which detector for which camera\")"
            )
        if self.path is not None and self.sha256 is None:
            raise ValueError(f"model.path {self.path} needs model.sha256 as well: files are verified before loading")
        return self


class DetectConfig(_Strict):
    confidence: float | None = Field(None, gt=0, lt=1, description="a detection this sure may start a track (default: the model family's, README)")
    fps: float | None = Field(None, gt=0, le=240, description="detection rate; frames between are not run (default: every frame); 5 counts as well as 10")
    track_low: float | None = Field(
        None, gt=0, lt=1, description="detections down to this confidence only continue tracks (ByteTrack; default: the model family's)",
    )
    iou: float = Field(0.5, gt=0, lt=1)
    classes: list[str] = Field(default_factory=lambda: ["person", "bicycle", "car", "motorcycle", "bus", "truck"])


class GateConfig(_Strict):
    enabled: bool = True
    width: int = Field(160, ge=32, le=1920)
    threshold: int = Field(25, ge=1, le=255)
    min_area: float = Field(0.002, ge=0, le=1)
    max_interval_frames: int = Field(10, ge=1)


class TamperConfig(_Strict):
    """View checks against a reference learnt at start (edge/tamper.py); only verdicts leave the node."""

    enabled: bool = True
    every_s: float = Field(1.0, gt=0, description="one frame this often is looked at")
    hold: int = Field(5, ge=1, description="looks in a row a verdict must hold before it is reported (and to clear)")
    shift: float = Field(0.02, gt=0, lt=1, description="moved: the view shifted more than this share of its width")
    flat_cells: float = Field(0.4, gt=0, le=1, description="blocked: this share of the view lost its texture")
    blur: float = Field(0.6, gt=0, lt=1, description="defocused: edge sharpness fell under this share of the reference's")


class TrackingConfig(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _legacy_lost_frames(cls, data: Any) -> Any:
        # Before 0.2 the lost-track buffer was ByteTrack's frames at 30 fps.
        if isinstance(data, dict) and "lost_frames" in data and "lost_s" not in data:
            data = dict(data)
            data["lost_s"] = data.pop("lost_frames") / 30
        return data

    min_hits: int = Field(2, ge=1, description="frames a track is seen before it counts (what it did before is kept)")
    lost_s: float = Field(3.0, gt=0, description="a track the detector lost is kept this long for the object to be found again")
    join_s: float = Field(2.0, ge=0, description="a lost track and a new one where it should be within this long are one object (0: off)")
    join_distance: float = Field(
        0.08, ge=0, le=1,
        description="how far from the lost track's predicted place the new one may start, per second lost (a tall person: a quarter of their height)",
    )
    match_cost: float = Field(0.95, gt=0, lt=1, description="ByteTrack's matching threshold (1 - IoU x score)")
    timeout_s: float = Field(2.0, gt=0, description="unseen this long: the track has ended")
    cross_s: float = Field(
        1.0, ge=0, le=10,
        description="a line crossing counts once the object has stayed this long on the new side (or its track ended there); 0: at once",
    )
    margin: float = Field(0.02, ge=0, le=0.5, description="band around a line or a zone border that counts as neither side")


class LineConfig(_Strict):
    name: Name
    points: tuple[Point, Point] = Field(description="two points, as fractions of the frame ([x, y], 0..1)")
    entrance: str | None = Field(
        None, description="a door of the camera's site: the line's direction (in or out) that enters the site (README, \"People inside a site\")",
    )

    @field_validator("entrance")
    @classmethod
    def _direction(cls, value: str | None) -> str | None:
        if value is not None and value not in ("in", "out"):
            raise ValueError(
                f"entrance is the one direction of the line that enters the site, in or out, not {value!r} "
                "(the other direction leaves it)"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> LineConfig:
        if self.points[0] == self.points[1]:
            raise ValueError("the two points of a line must differ")
        return self


class ZoneConfig(_Strict):
    name: Name
    polygon: list[Point] = Field(min_length=3, description="corners, as fractions of the frame")


class OutboxConfig(_Strict):
    path: Path | None = Field(None, description="SQLite file; default: outbox-<camera_id>.sqlite3 beside the config")
    max_events: int = Field(1_000_000, ge=100)
    keep_confirmed: bool = Field(False, description="keep a local copy of confirmed events (audits)")


class MqttConfig(_Strict):
    url: str | None = Field(None, description="default: FLEETSIGHT_MQTT_URL")
    username: str | None = Field(None, description="default: the camera id")
    password_env: str | None = Field(None, description="name of an environment variable holding the password")
    password_file: Path | None = Field(None, description="default: <services_dir>/secrets/cameras/<camera_id>.password if there")
    wire_format: str = Field("json", pattern="^(json|msgpack)$")
    batch_max: int = Field(100, ge=1, le=1000)

    def password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return value
        return None


class SnapshotConfig(_Strict):
    """Occasional small JPEG of the scene for the operator; off by default,
    because then no pixels at all leave the node."""

    enabled: bool = False
    every_s: float = Field(300.0, ge=1)
    width: int = Field(320, ge=64, le=1920)
    quality: int = Field(70, ge=10, le=95)


class CameraConfig(_Strict):
    camera_id: Ident
    site: Ident
    source: SourceConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tamper: TamperConfig = Field(default_factory=TamperConfig)
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)
    occupancy_interval_s: float = Field(10.0, gt=0)
    health_interval_s: float = Field(30.0, gt=0)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    metrics_port: int | None = Field(9104, ge=0, le=65535, description="Prometheus /metrics; null: off")
    metrics_bind: str = "127.0.0.1"

    @model_validator(mode="before")
    @classmethod
    def _entrances_need_a_site(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("site"):
            doors = [str(line.get("name")) for line in data.get("lines") or [] if isinstance(line, dict) and line.get("entrance")]
            if doors:
                raise ValueError(f"line {', '.join(doors)} is a site entrance, but the camera names no site: set site (or the site file's site)")
        return data

    @field_validator("lines", "zones")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        names = [i.name for i in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names must be unique, repeated: {', '.join(dupes)}")
        return items


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return raw


def _problems(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors())


def load_camera_config(path: Path | str) -> CameraConfig:
    """Read and validate a camera YAML file; relative paths are taken from its folder."""
    path = Path(path)
    return _camera(_read_yaml(path), path.resolve().parent, str(path))


def _camera(raw: dict[str, Any], base: Path, where: str, prefix: str = "") -> CameraConfig:
    """Validate one camera's settings; relative paths are taken from ``base``."""
    try:
        config = CameraConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_problems(exc, prefix)}") from None
    if config.outbox.path is None:
        config.outbox.path = base / f"outbox-{config.camera_id}.sqlite3"
    elif not config.outbox.path.is_absolute():
        config.outbox.path = base / config.outbox.path
    source = config.source.uri
    if "://" not in source and not source.isdigit() and not Path(source).is_absolute():
        config.source.uri = str(base / source)
    store = config.model.updates.store
    if store is None:
        config.model.updates.store = config.outbox.path.parent / f"models-{config.camera_id}"
    elif not store.is_absolute():
        config.model.updates.store = base / store
    if config.model.path is not None and not config.model.path.is_absolute():
        config.model.path = base / config.model.path
    if config.mqtt.password_file is not None and not config.mqtt.password_file.is_absolute():
        config.mqtt.password_file = base / config.mqtt.password_file
    return config


# --- a site: many cameras in one process ------------------------------------------


class SiteFile(_Strict):
    """``site.yaml``: the site's cameras, with settings they share."""

    site: Ident | None = Field(None, description="the site id of every camera that names none")
    defaults: dict[str, Any] = Field(default_factory=dict, description="camera settings every camera starts from (its own win)")
    metrics_port: int | None = Field(9104, ge=0, le=65535, description="one /metrics for the whole box; null: off")
    metrics_bind: str = "127.0.0.1"
    cameras: list[dict[str, Any]] = Field(min_length=1, description="camera settings, as in a camera file")


@dataclass(frozen=True)
class SiteConfig:
    cameras: list[CameraConfig]
    metrics_port: int | None
    metrics_bind: str


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mapping by mapping (lists are replaced whole)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_edge_config(path: Path | str) -> CameraConfig | SiteConfig:
    """What ``fleetsight edge run --config`` names: a camera file, a site file
    (one with ``cameras``) or a folder of camera files, read once and validated."""
    path = Path(path)
    if path.is_dir():
        return load_site_config(path)
    raw = _read_yaml(path)
    return _site(raw, path) if "cameras" in raw else _camera(raw, path.resolve().parent, str(path))


def load_site_config(path: Path | str) -> SiteConfig:
    """A site file (``cameras`` with shared ``defaults``) or a folder of camera files, validated."""
    path = Path(path)
    if not path.is_dir():
        return _site(_read_yaml(path), path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        raise ConfigError(f"{path}: no camera files (*.yaml) in this folder")
    cameras = [load_camera_config(f) for f in files]
    return _distinct(SiteConfig(cameras, cameras[0].metrics_port, cameras[0].metrics_bind), path)


def _site(raw: dict[str, Any], path: Path) -> SiteConfig:
    try:
        doc = SiteFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from None
    base = path.resolve().parent
    cameras = []
    for i, camera in enumerate(doc.cameras):
        merged = _merge(doc.defaults, camera)
        if doc.site is not None:
            merged.setdefault("site", doc.site)
        name = f" ({camera['camera_id']})" if "camera_id" in camera else ""
        cameras.append(_camera(merged, base, str(path), prefix=f"cameras[{i}]{name}."))
    return _distinct(SiteConfig(cameras, doc.metrics_port, doc.metrics_bind), path)


def _distinct(site: SiteConfig, path: Path) -> SiteConfig:
    """Refuse two cameras with one id or one outbox."""
    for what, values in (("camera_id", [c.camera_id for c in site.cameras]), ("outbox.path", [str(c.outbox.path) for c in site.cameras])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{path}: each camera needs its own {what}; repeated: {', '.join(repeated)}")
    return site
