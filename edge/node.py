"""The camera node: video in, compact events out, none lost.

capture -> motion gate -> detector -> tracker -> scene (lines, zones)
-> outbox (SQLite) -> uplink (MQTT). The video loop runs in a thread (it is
CPU-bound and blocking); the uplink runs on the asyncio loop. Each holds
its own connection to the outbox file.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge.capture import Frame, VideoSource
from edge.config import CameraConfig
from edge.detector import Detections, Detector, model_spec
from edge.gate import MotionGate
from edge.outbox import NewEvent, Outbox
from edge.scene import Line, Observation, Scene, Zone
from edge.tracker import TrackedObject, Tracker
from edge.uplink import Uplink
from fleetsight.settings import Settings
from schemas.codec import Event

log = logging.getLogger("fleetsight.edge")

STATE_EVERY_S = 2.0  # how stale the saved scene may get when nothing happens


@dataclass
class NodeStats:
    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    detector_runs: int = 0
    skipped: int = 0
    events: Counter = field(default_factory=Counter)
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    frame_times: deque = field(default_factory=lambda: deque(maxlen=100))

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0

    def inference_percentiles(self) -> tuple[float, float]:
        if not self.inference_ms:
            return 0.0, 0.0
        data = sorted(self.inference_ms)
        return statistics.median(data), data[min(len(data) - 1, int(0.95 * len(data)))]


class CameraNode:
    """One camera; see the module docstring."""

    def __init__(
        self,
        config: CameraConfig,
        settings: Settings,
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
        self.spec = model_spec(config.model.name, config.model.path, config.model.sha256)
        self.detector = Detector(
            self.spec,
            confidence=config.detect.confidence,
            iou=config.detect.iou,
            classes=config.detect.classes,
            threads=config.model.threads,
            providers=config.model.providers,
            letterbox=config.model.letterbox,
        )
        self.source = VideoSource(config.source.uri, loop=config.source.loop, realtime=config.source.realtime, fps=config.source.fps)
        self.gate = (
            MotionGate(config.gate.width, config.gate.threshold, config.gate.min_area, config.gate.max_interval_frames)
            if config.gate.enabled
            else None
        )
        self.scene = Scene(
            [Line(l.name, *l.points) for l in config.lines],
            [Zone(z.name, tuple(z.polygon)) for z in config.zones],
            margin=config.tracking.margin,
            track_timeout_s=config.tracking.timeout_s,
        )
        self._outbox_path = config.outbox.path or Path(f"outbox-{config.camera_id}.sqlite3")
        self._uplink_outbox = self._open_outbox()
        self.uplink = Uplink(
            settings,
            self._uplink_outbox,
            wire_format=config.mqtt.wire_format,  # type: ignore[arg-type]
            batch_max=config.mqtt.batch_max,
            username=config.mqtt.username or (config.camera_id if settings.mqtt.username is None else None),
            password=config.mqtt.password(),
        )
        self._stop_video = threading.Event()
        self._debug = _DebugWriter(debug_dir, config) if debug_dir else None

    def _open_outbox(self) -> Outbox:
        return Outbox(self._outbox_path, self.config.camera_id, self.config.site, self.config.outbox.max_events)

    # --- video thread -------------------------------------------------------------

    def _video_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        outbox = self._open_outbox()
        tracker: Tracker | None = None
        saved_state = outbox.load_state()
        next_occupancy = next_health = next_state = 0.0
        now = 0.0
        frame: Frame | None = None
        try:
            for frame in self.source.frames(self._stop_video):
                now = frame.media_s
                if tracker is None:
                    tracker = Tracker(
                        self.source.fps, activation=self.config.detect.confidence, min_hits=self.config.tracking.min_hits,
                        lost_frames=self.config.tracking.lost_frames,
                    )
                    self.scene.restore(saved_state, now)
                    next_occupancy = now + self.config.occupancy_interval_s
                    next_health = now + self.config.health_interval_s
                self.stats.frames += 1
                self.stats.frame_times.append(time.monotonic())
                tracked: list[TrackedObject] | None = None
                if self.gate is None or self.gate.should_detect(frame.image):
                    detections = self._detect(frame.image)
                    tracked = tracker.update(detections)
                    events = self.scene.update(frame.ts, now, self._observations(tracked, frame.image.shape))
                else:
                    self.stats.skipped += 1
                    events = self.scene.expire(frame.ts, now)
                if self.scene.zones and now >= next_occupancy:
                    events += self.scene.occupancy(frame.ts)
                    next_occupancy = now + self.config.occupancy_interval_s
                if now >= next_health:
                    events.append(self._health(frame.ts, outbox))
                    next_health = now + self.config.health_interval_s
                if events or now >= next_state:
                    self._store(outbox, events, now, loop)
                    next_state = now + STATE_EVERY_S
                if self._debug and tracked is not None:
                    self._debug.maybe_write(frame, tracked, events, self.detector, self.scene)
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    break
            if frame is not None and not self._stop_video.is_set():
                # The source is over (a file's end): every track has ended.
                self._store(outbox, self.scene.end_all(frame.ts), now, loop)
            elif frame is not None:
                self._store(outbox, [], now, loop)  # keep the scene for a restart to take over
        finally:
            outbox.close()

    def _detect(self, image: np.ndarray) -> Detections:
        started = time.perf_counter()
        detections = self.detector(image)
        self.stats.inference_ms.append((time.perf_counter() - started) * 1000)
        self.stats.detector_runs += 1
        return detections

    def _observations(self, tracked: list[TrackedObject], shape: tuple[int, ...]) -> list[Observation]:
        h, w = shape[:2]
        return [
            Observation(
                t.track_id, self.detector.class_name(t.class_id), t.confidence, t.anchor(w, h),
                (t.xyxy[0] / w, t.xyxy[1] / h, t.xyxy[2] / w, t.xyxy[3] / h),
            )
            for t in tracked
        ]

    def _health(self, ts: int, outbox: Outbox) -> NewEvent:
        p50, p95 = self.stats.inference_percentiles()
        return NewEvent(ts, "health", {
            "uptime_s": round(time.monotonic() - self.stats.started, 1),
            "fps": round(self.stats.fps(), 2),
            "frames": self.stats.frames,
            "frames_skipped": self.stats.skipped,
            "inference_ms_p50": round(p50, 2),
            "inference_ms_p95": round(p95, 2),
            "outbox_depth": outbox.depth(),
            "outbox_age_s": round(outbox.oldest_age_s(ts), 1),
            "dropped_events": outbox.dropped,
            "model_version": self.spec.version,
        })

    def _store(self, outbox: Outbox, events: list[NewEvent], now: float, loop: asyncio.AbstractEventLoop) -> None:
        stored = outbox.append(events, state=self.scene.snapshot(now))
        if not stored:
            return
        for event in stored:
            self.stats.events[event.type] += 1
        if self.on_events:
            self.on_events(stored)
        loop.call_soon_threadsafe(self.uplink.notify)

    # --- asyncio side -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 30.0, progress: bool = False) -> bool:
        """Run until ``stop`` is set or the source ends; True if the cloud confirmed everything."""
        loop = asyncio.get_running_loop()
        uplink_stop = asyncio.Event()
        uplink_task = asyncio.create_task(self.uplink.run(uplink_stop))
        video = asyncio.create_task(asyncio.to_thread(self._video_loop, loop))
        waiter = asyncio.create_task(stop.wait())
        reporter = asyncio.create_task(self._report(progress))
        try:
            await asyncio.wait({video, waiter}, return_when=asyncio.FIRST_COMPLETED)
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
        )

    async def _report(self, progress: bool) -> None:
        """A live line on a terminal; a log line every health interval otherwise."""
        interval = 0.5 if progress else self.config.health_interval_s
        while True:
            await asyncio.sleep(interval)  # display refresh period
            if progress:
                sys.stderr.write("\r\033[K" + self.status_line())
                sys.stderr.flush()
            else:
                log.info("%s", self.status_line())


class _DebugWriter:
    """Annotated frames on local disk, so an operator can see what is counted."""

    def __init__(self, directory: Path, config: CameraConfig, every: int = 25, keep: int = 500) -> None:
        self.directory = directory
        self.config = config
        self.every = every
        self.keep = keep
        self.written = 0
        directory.mkdir(parents=True, exist_ok=True)

    def maybe_write(self, frame: Frame, tracked: list[TrackedObject], events: list[NewEvent], detector: Detector, scene: Scene) -> None:
        notable = any(e.type in ("line.cross", "zone.enter", "zone.exit") for e in events)
        if frame.index % self.every and not notable:
            return
        import cv2

        image = frame.image.copy()
        h, w = image.shape[:2]
        for line in self.config.lines:
            (ax, ay), (bx, by) = line.points
            cv2.line(image, (int(ax * w), int(ay * h)), (int(bx * w), int(by * h)), (0, 200, 255), 2)
            cv2.putText(image, line.name, (int(ax * w), int(ay * h) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1)
        for zone in self.config.zones:
            pts = np.array([(int(x * w), int(y * h)) for x, y in zone.polygon], np.int32)
            cv2.polylines(image, [pts], True, (255, 120, 0), 2)
            cv2.putText(image, zone.name, tuple(pts[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 120, 0), 1)
        for t in tracked:
            x1, y1, x2, y2 = (int(v) for v in t.xyxy)
            cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
            state = scene.tracks.get(t.track_id)  # label with the id the events carry
            label = f"#{state.track_id if state else '?'} {detector.class_name(t.class_id)} {t.confidence:.2f}"
            cv2.putText(image, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
        name = self.directory / f"{self.config.camera_id}-{self.written % self.keep:04d}.jpg"
        cv2.imwrite(str(name), image)
        self.written += 1
