"""The camera node: video in, compact events out, none lost.

capture -> pipeline (gate, detector, tracker, scene -> outbox) -> uplink
(MQTT). The video loop runs in a thread (it is CPU-bound and blocking); the
uplink runs on the asyncio loop. Each holds its own connection to the
outbox file.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge import metrics as edge_metrics
from edge.capture import Frame, VideoSource
from edge.config import CameraConfig
from edge.model_store import ModelStore, startup_detector
from edge.model_switch import ModelSwitch
from edge.outbox import Outbox
from edge.pipeline import DebugWriter, NodeStats, Pipeline, build_scene
from edge.updater import ModelUpdater
from edge.uplink import Uplink
from runtime import metrics
from runtime.settings import EdgeSettings
from schemas.codec import Event

log = logging.getLogger("fleetsight.edge")


def _in_thread(name: str, fn: Callable[..., None], *args: object) -> asyncio.Future[None]:
    """Run ``fn`` in a thread of its own; the future ends with it.

    Not ``asyncio.to_thread``: its pool has min(32, cores + 4) threads, six on
    a 2-core box, and a site's video loops run for good, one per camera.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(exc: BaseException | None) -> None:
        if not done.done():
            done.set_exception(exc) if exc is not None else done.set_result(None)

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(finish, exc)
        else:
            loop.call_soon_threadsafe(finish, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return done


class CameraNode:
    """One camera; see the module docstring."""

    def __init__(
        self,
        config: CameraConfig,
        settings: EdgeSettings,
        *,
        debug_dir: Path | None = None,
        max_frames: int | None = None,
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> None:
        if config.mqtt.url:
            settings = settings.model_copy(update={"mqtt_url": config.mqtt.url})
        self.config = config
        self.settings = settings
        self.debug_dir = debug_dir
        self.max_frames = max_frames
        self.on_events = on_events
        self.stats = NodeStats()
        self._outbox_path = config.outbox.path or Path(f"outbox-{config.camera_id}.sqlite3")
        updates = config.model.updates
        self.models = ModelStore(updates.store or self._outbox_path.parent / f"models-{config.camera_id}")
        self.switch = ModelSwitch(startup_detector(config, self.models), updates.probation_frames, updates.max_slowdown)
        self.spec = self.switch.detector.spec
        src = config.source
        self.source = VideoSource(
            src.uri, loop=src.loop, realtime=src.realtime, fps=src.fps, stall_s=src.stall_s, reconnect_max_s=src.reconnect_max_s,
        )
        self.scene = build_scene(config)
        self._uplink_outbox = self._open_outbox()
        self.uplink = Uplink(
            settings,
            self._uplink_outbox,
            wire_format=config.mqtt.wire_format,  # type: ignore[arg-type]
            batch_max=config.mqtt.batch_max,
            # A camera logs in as itself: the broker's ACL ties it to its own topics.
            username=config.mqtt.username or config.camera_id,
            password=config.mqtt.password() or settings.camera_password(config.camera_id),
        )
        self.updater = ModelUpdater(config, self.uplink, self.switch, self.models, settings.mqtt_topics)
        self._stop_video = threading.Event()
        self._debug = DebugWriter(debug_dir, config) if debug_dir else None

    def _open_outbox(self) -> Outbox:
        return Outbox(
            self._outbox_path, self.config.camera_id, self.config.site, self.config.outbox.max_events,
            keep_confirmed=self.config.outbox.keep_confirmed,
        )

    # --- video thread -------------------------------------------------------------

    def _video_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        outbox = self._open_outbox()
        pipeline: Pipeline | None = None

        def stored(events: list[Event]) -> None:
            if self.on_events:
                self.on_events(events)
            loop.call_soon_threadsafe(self.uplink.notify)

        try:
            for frame in self.source.frames(self._stop_video):
                if pipeline is None:
                    pipeline = Pipeline(
                        self.config, self.switch.detector, self.scene, outbox, self.source.fps,
                        stats=self.stats, on_stored=stored, debug=self._debug, start=frame.media_s,
                        on_snapshot=lambda jpeg: loop.call_soon_threadsafe(self.uplink.publish_snapshot, jpeg),
                        switch=self.switch, clock=self.uplink.clock_estimate, video=self.source,
                    )
                pipeline.step(frame)  # a frame, or an Idle tick while a live stream has none
                if isinstance(frame, Frame) and self.source.arrival is not None:
                    self.stats.lag_ms.append((time.monotonic() - self.source.arrival) * 1000)
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    break
            if pipeline is not None:
                # A source that ran out (a file's end) has ended every track; on a
                # stop the scene is kept for a restart to take over.
                pipeline.finish(source_ended=not self._stop_video.is_set())
        finally:
            outbox.close()

    # --- asyncio side -----------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, drain_timeout_s: float = 30.0, progress: bool = False, serve_metrics: bool = True, report: bool = True,
    ) -> bool:
        """Run until ``stop`` is set or the source ends; True if the cloud confirmed everything.

        A site runs many nodes in one process: it serves /metrics once
        (``serve_metrics=False`` here) and shows their status itself (``report=False``).
        """
        loop = asyncio.get_running_loop()
        if serve_metrics:
            metrics.serve(self.config.metrics_port, self.config.metrics_bind)
        edge_metrics.EDGE_MODEL.labels(self.config.camera_id, self.spec.version).set(1)
        uplink_stop = asyncio.Event()
        self.updater.start()
        uplink_task = asyncio.create_task(self.uplink.run(uplink_stop))
        video = _in_thread(f"video {self.config.camera_id}", self._video_loop, loop)
        waiter = asyncio.create_task(stop.wait())
        reporter = asyncio.create_task(self._report(progress) if report else stop.wait())
        try:
            either: set[asyncio.Future[Any]] = {video, waiter}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            self._stop_video.set()
            await video  # re-raises a failure of the video loop
            drained = await self.uplink.drained(0 if stop.is_set() else drain_timeout_s)
        finally:
            self._stop_video.set()
            for task in (waiter, reporter):
                task.cancel()
            uplink_stop.set()
            await asyncio.gather(uplink_task, return_exceptions=True)
            self._uplink_outbox.close()
            if progress:
                sys.stderr.write("\n")
        log.info(
            "%s: %d frames, %d detector runs, %d skipped by the gate, events %s",
            self.config.camera_id, self.stats.frames, self.stats.detector_runs, self.stats.skipped, dict(self.stats.events),
        )
        return drained

    def status_line(self) -> str:
        p50, _ = self.stats.inference_percentiles()
        link = "up" if self.uplink.stats.connected else "DOWN"
        return (
            f"{self.config.camera_id}  frames {self.stats.frames}  {self.stats.fps():.1f} fps  "
            f"detect {p50:.0f} ms  gated {self.stats.skipped}  events {sum(self.stats.events.values())}  "
            f"outbox {self._uplink_outbox.depth()}  link {link}  video {self.source.state}"
            + (f" (reconnects {self.source.reconnects}, lost {self.source.lost_s():.0f} s)" if self.source.reconnects else "")
        )

    def update_gauges(self) -> None:
        camera = self.config.camera_id
        edge_metrics.EDGE_OUTBOX_DEPTH.labels(camera).set(self._uplink_outbox.depth())
        edge_metrics.EDGE_OUTBOX_DROPPED.labels(camera).set(self._uplink_outbox.dropped)
        edge_metrics.EDGE_LINK_UP.labels(camera).set(1 if self.uplink.stats.connected else 0)

    async def _report(self, progress: bool) -> None:
        """A live line on a terminal; a log line every health interval otherwise."""
        interval = 0.5 if progress else self.config.health_interval_s
        last_log = 0.0
        while True:
            await asyncio.sleep(min(interval, 1.0))  # display and gauge refresh period
            self.update_gauges()
            if not progress and asyncio.get_running_loop().time() - last_log < interval:
                continue
            last_log = asyncio.get_running_loop().time()
            if progress:
                sys.stderr.write("\r\033[K" + self.status_line())
                sys.stderr.flush()
            else:
                log.info("%s", self.status_line())
