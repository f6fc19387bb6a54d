"""Models rolled out from the cloud: fetch, verify, load beside, swap, watch, keep or roll back.

The cloud leaves a retained instruction (``schemas.rollout.DesiredModel``)
for the camera or its site and the file as retained chunks. The updater
(asyncio side) fetches the chunks it lacks into the local store, checks
every chunk and the whole file against their sha256, loads the model in a
thread and runs it once, then offers it to the ``ModelSwitch``. The video
thread takes it between two frames, so no frame waits for a load and none is
dropped. For ``probation_frames`` detector runs the old model stays loaded:
an inference error, or a median inference time over ``max_slowdown`` times
the old one's, puts the old model back (the failing frame is run again on
it). A model that passes is written down as current, so a restart runs it.
A version that failed is not tried again until a new rollout asks for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import numpy as np

from edge import metrics as edge_metrics
from edge.config import CameraConfig
from edge.detector import ObjectDetector, build_detector
from edge.model_spec import ModelError, ModelSpec, canonical_name, model_spec
from edge.model_store import ModelStore
from edge.model_switch import ModelSwitch
from schemas.rollout import DesiredModel, ModelReport, RolloutError, State
from schemas.topics import MqttTopics

log = logging.getLogger("fleetsight.updater")

WINDOW = 8  # chunks asked for at a time


class ModelUpdater:
    """Follows the camera's rollout instructions (asyncio side). ``link`` is
    the camera's uplink: ``subscribe``, ``unsubscribe`` and ``retain``."""

    def __init__(self, config: CameraConfig, link, switch: ModelSwitch, store: ModelStore, topics: MqttTopics) -> None:
        self.config = config
        self.camera_id = config.camera_id
        self.link = link
        self.switch = switch
        self.store = store
        self.topics = topics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._instructions: dict[str, DesiredModel] = {}
        self._target: DesiredModel | None = None
        self._fetching: set[int] = set()
        self._missing: list[int] = []
        self._running = switch.detector.spec
        self._last_progress = -1.0
        self._tasks: set[asyncio.Task] = set()
        switch.on_outcome = self._outcome_from_video_thread

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.report(None, None)
        for topic in (self.topics.model_desired(self.camera_id), self.topics.site_model_desired(self.config.site)):
            self.link.subscribe(topic, self._on_instruction)

    # --- reporting ----------------------------------------------------------------

    def report(self, desired: DesiredModel | None, state: State | None, detail: str = "", progress: float = 0.0) -> None:
        spec = self._running
        message = ModelReport(
            camera_id=self.camera_id, running_version=spec.version, running_sha256=spec.sha256,
            rollout_id=desired.rollout_id if desired else None, version=desired.version if desired else None,
            state=state, detail=detail, progress=progress,
        )
        self.link.retain(self.topics.model_report(self.camera_id), message.to_json())
        if state in ("refused", "failed", "rolled_back"):
            log.error("%s: model %s %s: %s", self.camera_id, desired.version if desired else "?", state.replace("_", " "), detail)
        elif state in ("active", "probation"):
            log.info("%s: model %s %s %s", self.camera_id, desired.version if desired else "?", state, detail)

    def _fail(self, desired: DesiredModel, state: State, reason: str) -> None:
        self.store.record_failure(desired, reason)
        self.report(desired, state, reason)

    # --- instructions -------------------------------------------------------------

    def _on_instruction(self, topic: str, payload: bytes) -> None:
        if not payload:
            self._instructions.pop(topic, None)  # a cleared retained instruction
            return
        try:
            desired = DesiredModel.from_json(payload)
        except RolloutError as exc:
            log.warning("%s: ignoring the instruction on %s: %s", self.camera_id, topic, exc)
            return
        self._instructions[topic] = desired
        latest = max(self._instructions.values(), key=lambda d: d.rollout_id)
        if self._target is None or latest.rollout_id != self._target.rollout_id:
            self._follow(latest)

    def _follow(self, desired: DesiredModel) -> None:
        self._stop_fetching()
        self._target = desired
        if desired.sha256 == self._running.sha256:
            self.switch.cancel(f"superseded by {desired.version}")  # a model still on probation goes
            self.report(desired, "active", "already running it")
            return
        previous = self.store.failure(desired)
        if previous is not None:
            self.report(desired, "failed", f"{previous} (not tried again until a new rollout)")
            return
        if not self.config.model.updates.enabled:
            self.report(desired, "refused", "model updates are turned off in this camera's config")
            return
        if canonical_name(desired.name) != canonical_name(self.config.model.name):
            self._fail(desired, "refused", f"a {desired.name} model; this camera runs {self.config.model.name}")
            return
        if desired.chunks != -(-desired.size // desired.chunk_size):
            self._fail(desired, "refused", f"{desired.chunks} chunks cannot hold {desired.size} bytes")
            return
        try:
            shipped: ModelSpec | None = model_spec(desired.name)
        except ModelError:  # a brought architecture: no file of it ships with the edge
            shipped = None
        if shipped is not None and desired.sha256 == shipped.sha256:
            self._spawn(self._load(desired, shipped.path))
        elif self.store.file(desired.sha256).is_file():
            self._spawn(self._load(desired, self.store.file(desired.sha256)))
        else:
            self._missing = self.store.missing(desired)
            log.info("%s: fetching %s, %d of %d chunks", self.camera_id, desired.version, len(self._missing), desired.chunks)
            self._fetch_more(desired)

    def _spawn(self, coro) -> None:  # noqa: ANN001 (any awaitable)
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- download -------------------------------------------------------------------

    def _fetch_more(self, desired: DesiredModel) -> None:
        while self._missing and len(self._fetching) < WINDOW:
            index = self._missing.pop(0)
            self._fetching.add(index)
            self.link.subscribe(self.topics.model_chunk(desired.sha256, index), self._on_chunk)
        done = desired.chunks - len(self._missing) - len(self._fetching)
        progress = done / desired.chunks
        if progress - self._last_progress >= 0.1 or progress == 1.0:
            self._last_progress = progress
            self.report(desired, "downloading", progress=progress)
        if not self._missing and not self._fetching:
            self._spawn(self._assemble_and_load(desired))

    def _stop_fetching(self) -> None:
        if self._target is not None:
            for index in self._fetching:
                self.link.unsubscribe(self.topics.model_chunk(self._target.sha256, index))
        self._fetching.clear()
        self._missing = []
        self._last_progress = -1.0

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        desired = self._target
        index = int(topic.rsplit("/", 1)[1])
        if desired is None or index not in self._fetching or topic != self.topics.model_chunk(desired.sha256, index):
            return  # a chunk of a download given up on
        self.link.unsubscribe(topic)
        self._fetching.discard(index)
        digest = hashlib.sha256(payload).hexdigest()
        if digest != desired.chunk_sha256[index]:
            self._stop_fetching()
            self._fail(desired, "refused", f"chunk {index} of the file is corrupted (sha256 {digest[:12]}, announced {desired.chunk_sha256[index][:12]})")
            return
        self.store.write_chunk(desired, index, payload)
        self._fetch_more(desired)

    async def _assemble_and_load(self, desired: DesiredModel) -> None:
        try:
            path = await asyncio.to_thread(self.store.assemble, desired)
        except ModelError as exc:
            self._fail(desired, "refused", str(exc))
            return
        await self._load(desired, path)

    async def _load(self, desired: DesiredModel, path: Path) -> None:
        self.report(desired, "loading")
        spec = model_spec(desired.name, path, desired.sha256, desired.version)
        try:
            detector = await asyncio.to_thread(self._build, spec)
        except Exception as exc:  # whatever the runtime raises, the old model goes on
            self._fail(desired, "failed", f"could not load it: {exc}")
            return
        if self._target is None or self._target.rollout_id != desired.rollout_id:
            return  # a newer instruction came while it loaded
        self.switch.offer(detector, desired)
        self.report(desired, "probation", f"watching {self.config.model.updates.probation_frames} detector runs")

    def _build(self, spec: ModelSpec) -> ObjectDetector:
        detector = build_detector(self.config, spec)
        # One run on a blank frame: a model that loads but cannot run fails
        # here, and the first (slow) run does not count against its probation.
        detector(np.zeros((spec.input_size, spec.input_size, 3), np.uint8))
        return detector

    # --- outcome ----------------------------------------------------------------------

    def _outcome_from_video_thread(self, desired: DesiredModel, kept: bool, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._outcome, desired, kept, reason)

    def _outcome(self, desired: DesiredModel, kept: bool, reason: str) -> None:
        if not kept and self._target is not None and desired.rollout_id != self._target.rollout_id:
            log.info("%s: model %s left on probation: %s", self.camera_id, desired.version, reason)
            return  # superseded by a newer rollout, not a failure of its own
        if kept:
            old, self._running = self._running, self.switch.detector.spec
            self.store.set_current(desired, self._running.path)
            edge_metrics.EDGE_MODEL.labels(self.camera_id, old.version).set(0)
            edge_metrics.EDGE_MODEL.labels(self.camera_id, desired.version).set(1)
            self.report(desired, "active", reason)
        else:
            self._fail(desired, "rolled_back", reason)
