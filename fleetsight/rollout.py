"""Operator side of model rollout: the registry in PostgreSQL, delivery over MQTT.

``publish`` stores a model file with what it takes to check it; ``rollout``
puts the file on the broker as retained, content-addressed chunks and leaves
a retained instruction for each site or camera addressed (an offline edge
reads it when it returns); ``status`` sets what each camera should run
beside what it reports. The edge side is ``edge/updater.py``; the messages
are ``schemas/rollout.py``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from fleetsight.mqtt_users import admin_settings
from runtime.mqtt import make_client, publish_confirmed, read_retained
from runtime.settings import Settings
from schemas.rollout import CHUNK_SIZE, VERSION_PATTERN, DesiredModel, ModelReport, RolloutError, chunk_hashes
from sinks.db import make_engine
from sinks.models import CameraStatus, ModelRollout, ModelRolloutTarget, ModelVersion

log = logging.getLogger("fleetsight.rollout")

MAX_MODEL_BYTES = 512 * 1024 * 1024


def inspect_onnx(path: Path, name: str, sha256: str) -> str:
    """The input shape, once the file has loaded the way an edge loads it (with
    the outputs a ``name`` model must have); raises RolloutError if it does not."""
    from edge.detector import Detector
    from edge.model_spec import model_spec

    try:
        detector = Detector(model_spec(name, path, sha256), threads=1)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RolloutError(f"{path}: it does not load as a {name}: {exc}") from None
    return "x".join(str(d) for d in detector.session.get_inputs()[0].shape)


async def publish(
    settings: Settings, path: Path, version: str | None, name: str | None, notes: str = "", check: bool = True, family: str | None = None,
) -> ModelVersion:
    """Put a model file in the registry, as architecture ``name`` or the first of
    ``family`` (its outputs checked against the family's); returns its row (without the content)."""
    from edge.model_spec import ModelError, architecture, registry

    try:
        name = architecture(name, family)
    except ModelError as exc:
        raise RolloutError(str(exc)) from None
    entry = registry()[name]
    if not path.is_file():
        raise RolloutError(f"{path}: no such file")
    content = path.read_bytes()
    if not 0 < len(content) <= MAX_MODEL_BYTES:
        raise RolloutError(f"{path}: {len(content)} bytes; a model must have 1 byte to {MAX_MODEL_BYTES // 2**20} MiB")
    sha = hashlib.sha256(content).hexdigest()
    version = version or f"{name}@{sha[:12]}"
    if not re.match(VERSION_PATTERN, version):
        raise RolloutError(f"version {version!r}: use letters, digits and _.:@+- (64 at most)")
    shape = inspect_onnx(path, name, sha) if check else f"1x3x{entry['input_size']}x{entry['input_size']}"
    row = ModelVersion(
        version=version, name=name, sha256=sha, size_bytes=len(content), input_shape=shape, classes=entry["num_classes"], notes=notes, content=content
    )
    engine = make_engine(settings.database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            existing = (await session.execute(select(ModelVersion).where(ModelVersion.sha256 == sha))).scalar_one_or_none()
            if existing is not None:
                if existing.version != version:
                    raise RolloutError(f"this file is already published as {existing.version}")
                return existing
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise RolloutError(f"version {version} is already taken by another file") from None
    finally:
        await engine.dispose()
    log.info("published %s (%s, family %s, %d bytes, sha256 %s)", version, name, entry["family"], len(content), sha)
    return row


class _Publisher:
    """A short admin MQTT session that publishes retained messages and waits for the broker's acks."""

    def __init__(self, settings: Settings) -> None:
        self.client = make_client(admin_settings(settings), f"{settings.mqtt_topic_root}-rollout-{uuid.uuid4().hex[:6]}", persistent=False)
        self.settings = settings

    def __enter__(self) -> _Publisher:
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else log.error("MQTT refused: %s", rc)
        self.client.connect_async(self.settings.mqtt.host, self.settings.mqtt.port)
        self.client.loop_start()
        if not connected.wait(30):
            self.client.loop_stop()
            raise RolloutError(f"cannot reach the MQTT broker at {self.settings.mqtt.host}:{self.settings.mqtt.port} as the admin user")
        return self

    def retain(self, items: list[tuple[str, bytes]]) -> None:
        try:
            publish_confirmed(self.client, items, retain=True)
        except TimeoutError:
            raise RolloutError("the broker did not acknowledge the model's messages in time") from None

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def rollout(settings: Settings, version: str, sites: list[str], cameras: list[str], progress: bool = False) -> DesiredModel:
    """Tell the given sites and cameras to run ``version``."""
    if not sites and not cameras:
        raise RolloutError("say where: --site S and/or --camera C (each may be repeated)")
    engine = make_engine(settings.database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            model = await session.get(ModelVersion, version)
            if model is None:
                known = (await session.execute(select(ModelVersion.version).order_by(ModelVersion.created_at))).scalars().all()
                raise RolloutError(f"no model version {version!r} in the registry; published: {', '.join(known) or 'none'}")
            content = (await session.execute(select(ModelVersion.content).where(ModelVersion.version == version))).scalar_one()
            for site in sites:
                if not await session.scalar(select(func.count()).select_from(CameraStatus).where(CameraStatus.site == site)):
                    log.warning("no camera of site %r has reported yet; the instruction waits for them on the broker", site)
            issued = datetime.now(UTC)
            row = ModelRollout(version=version, issued_at=issued)
            session.add(row)
            await session.flush()
            rollout_id = row.rollout_id
            session.add_all([ModelRolloutTarget(rollout_id=rollout_id, target_kind="site", target=s) for s in set(sites)]
                            + [ModelRolloutTarget(rollout_id=rollout_id, target_kind="camera", target=c) for c in set(cameras)])
            desired = DesiredModel(
                rollout_id=rollout_id, issued_at_ms=int(issued.timestamp() * 1000), version=version, name=model.name,
                sha256=model.sha256, size=model.size_bytes, chunk_size=CHUNK_SIZE, chunk_sha256=chunk_hashes(content),
            )
            topics = settings.mqtt_topics
            with _Publisher(settings) as pub:
                # The file first: an edge that sees the instruction finds every chunk there.
                pub.retain([(topics.model_chunk(model.sha256, i), content[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]) for i in range(desired.chunks)])
                payload = desired.to_json()
                pub.retain([(topics.site_model_desired(s), payload) for s in sites] + [(topics.model_desired(c), payload) for c in cameras])
            await session.commit()
    finally:
        await engine.dispose()
    log.info("rollout %d: %s to %s", rollout_id, version, ", ".join([f"site {s}" for s in sites] + [f"camera {c}" for c in cameras]))
    return desired


def read_reports(settings: Settings, timeout: float = 10.0) -> dict[str, ModelReport]:
    """Every camera's retained model report, read from the broker."""
    try:
        retained = read_retained(admin_settings(settings), settings.mqtt_topics.all_model_reports(), timeout)
    except TimeoutError as exc:
        raise RolloutError(str(exc)) from None
    reports: dict[str, ModelReport] = {}
    for topic, payload in retained.items():
        try:
            report = ModelReport.from_json(payload)
        except RolloutError as exc:
            log.warning("%s: %s", topic, exc)
            continue
        reports[report.camera_id] = report
    return reports


@dataclass
class CameraModelStatus:
    camera_id: str
    site: str | None
    desired: str | None
    running: str | None
    state: str
    detail: str


async def status(settings: Settings) -> tuple[list[ModelVersion], list[CameraModelStatus]]:
    """The registry, and per camera: what it should run, what it runs, how the rollout went."""
    engine = make_engine(settings.database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            versions = list((await session.execute(select(ModelVersion).order_by(ModelVersion.created_at))).scalars())
            rollouts = (await session.execute(
                select(ModelRolloutTarget.target_kind, ModelRolloutTarget.target, ModelRollout.rollout_id, ModelRollout.version)
                .join(ModelRollout).order_by(ModelRollout.rollout_id)
            )).all()
            cameras = {c.camera_id: c for c in (await session.execute(select(CameraStatus))).scalars()}
    finally:
        await engine.dispose()
    reports = read_reports(settings)
    latest = {(r.target_kind, r.target): r for r in rollouts}  # rollout ids grow with time
    rows = []
    for camera_id in sorted(set(cameras) | set(reports) | {t for k, t in latest if k == "camera"}):
        cam = cameras.get(camera_id)
        site = cam.site if cam else None
        candidates = [r for r in (latest.get(("camera", camera_id)), latest.get(("site", site or ""))) if r is not None]
        desired = max(candidates, key=lambda r: r.rollout_id) if candidates else None
        report = reports.get(camera_id)
        running = report.running_version if report else (cam.model_version if cam else None)
        if desired is None:
            state, detail = "-", ""
        elif report is not None and report.rollout_id == desired.rollout_id and report.state is not None:
            state, detail = report.state, report.detail
            if state == "downloading":
                detail = f"{report.progress:.0%}"
        elif running == desired.version:
            state, detail = "active", ""
        else:
            state, detail = "pending", "not heard from since the rollout"
        rows.append(CameraModelStatus(camera_id, site, desired.version if desired else None, running, state, detail))
    return versions, rows
