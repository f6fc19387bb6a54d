"""What a camera node does with each frame, from pixels to stored events.

motion gate -> detector -> tracker -> scene (lines, zones) -> outbox.
Kept apart from capture and networking so it can be driven frame by frame
(the node's video thread, benchmarks).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge import crowding
from edge import metrics as edge_metrics
from edge.capture import Frame, Idle, VideoSource
from edge.config import CameraConfig
from edge.detector import Detections, ObjectDetector, thresholds
from edge.events import NewEvent
from edge.gate import MotionGate
from edge.outbox import Outbox
from edge.scene import Line, Observation, Scene, Zone
from edge.stages import StageClock
from edge.tamper import TamperCheck
from edge.tracker import TrackedObject, Tracker
from schemas.codec import Event

if TYPE_CHECKING:
    from edge.model_switch import ModelSwitch

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
    lag_ms: deque = field(default_factory=lambda: deque(maxlen=600))  # live frames: arrival to processed
    detect_due: int = 0  # frames at which the detection rate asked for a detection (run, or gated)
    detect_missed: int = 0  # detection instants that passed with no frame taken (a busy node, a gap in the video)
    stages: StageClock = field(default_factory=StageClock)  # CPU per stage (bench/edge_capacity.py)
    people_seen: int = 0  # person detections sure enough to start a track, over every detector run
    people_overlapping: int = 0  # ... of which overlapped another person (edge/crowding.py)

    def crowding(self) -> float | None:
        """The share of people seen overlapping another, so far."""
        return crowding.crowding(self.people_overlapping, self.people_seen)

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


def build_scene(config: CameraConfig) -> Scene:
    return Scene(
        [Line(line.name, *line.points, line.entrance) for line in config.lines],
        [Zone(zone.name, tuple(zone.polygon)) for zone in config.zones],
        margin=config.tracking.margin,
        track_timeout_s=config.tracking.timeout_s,
        min_hits=config.tracking.min_hits,
        join_s=config.tracking.join_s,
        join_distance=config.tracking.join_distance,
        cross_s=config.tracking.cross_s,
        classes=config.detect.classes,
    )


class Pipeline:
    """Per-frame processing for one camera; events go to ``outbox``."""

    def __init__(
        self,
        config: CameraConfig,
        detector: ObjectDetector,
        scene: Scene,
        outbox: Outbox,
        fps: float,
        *,
        stats: NodeStats | None = None,
        on_stored: Callable[[list[Event]], None] | None = None,
        debug: DebugWriter | None = None,
        start: float = 0.0,
        on_snapshot: Callable[[bytes], object] | None = None,
        switch: ModelSwitch | None = None,
        clock: Callable[[], tuple[float, float] | None] | None = None,
        video: VideoSource | None = None,
    ) -> None:
        self.config = config
        self.detector = detector
        self.switch = switch
        self.scene = scene
        self.outbox = outbox
        self.stats = stats or NodeStats()
        self.on_stored = on_stored
        self.debug = debug
        self.gate = (
            MotionGate(config.gate.width, config.gate.threshold, config.gate.min_area, config.gate.max_interval_frames)
            if config.gate.enabled
            else None
        )
        # A detection rate below the stream's: the detector looks at every
        # n-th moment, and the tracker paces its motion model to that rate.
        self._detect_every = 1.0 / config.detect.fps if config.detect.fps and config.detect.fps < fps else 0.0
        self._next_detect = start
        self._activation = thresholds(config, detector.spec)[0]  # a detection this sure may start a track
        self.tracker = Tracker(
            # The tracker reports a track from its second detection on; the
            # scene confirms it after min_hits (and keeps what it did before).
            min(fps, config.detect.fps or fps), activation=self._activation, min_hits=2,
            lost_s=config.tracking.lost_s, match_cost=config.tracking.match_cost,
        )
        scene.restore(outbox.load_state(), start)
        self.now = start
        self.last_ts = 0
        self._next_occupancy = start + config.occupancy_interval_s
        self._next_health = start + config.health_interval_s
        self._next_state = start
        self._reported = (0, 0, 0, 0, 0)  # frames, skipped, missed live frames, people seen and overlapping at the last health report
        camera = config.camera_id
        self._m_frames = edge_metrics.EDGE_FRAMES.labels(camera)
        self._m_skipped = edge_metrics.EDGE_FRAMES_SKIPPED.labels(camera)
        self._m_inference = edge_metrics.EDGE_INFERENCE.labels(camera)
        # Pixels leave the node only when the operator turned snapshots on.
        self.on_snapshot = on_snapshot if config.snapshots.enabled else None
        self._next_snapshot = start
        self.tracked: list[TrackedObject] | None = None  # the last frame's tracks; None when it ran no detector
        self.clock = clock  # (offset, error) of this node's clock against the bridge's, in seconds
        # The lines and zones go out once per start; their events carry the version.
        self._geometry_due = bool(scene.geometry)
        self.video = video
        self._video_reported = "ok"  # a change of video state or tamper verdict is reported at once
        t = config.tamper
        self.tamper = (
            TamperCheck(every_s=t.every_s, hold=t.hold, shift=t.shift, flat_cells=t.flat_cells, blur=t.blur) if t.enabled else None
        )

    def step(self, frame: Frame | Idle) -> list[Event]:
        """Process one frame (or a tick without one); returns the events it stored."""
        if isinstance(frame, Idle):
            return self.idle(frame)
        events: list[NewEvent] = []
        if frame.after_gap:
            # Seconds of video are missing: every track ends where it was last
            # seen (no dwell or crossing made up over the gap), and tracker and
            # gate start over instead of joining two moments far apart.
            events += self.scene.end_all(self.last_ts or frame.ts)
            self.tracker.reset()
            if self.gate is not None:
                self.gate.reset()
            self._next_detect = frame.media_s
        now = self.now = frame.media_s
        self.last_ts = frame.ts
        self.stats.frames += 1
        self.stats.frame_times.append(time.monotonic())
        self._m_frames.inc()
        report = self.tamper is not None and self.tamper.observe(frame.image, now)
        tracked: list[TrackedObject] | None = None
        due = now + 1e-3 >= self._next_detect
        if due:
            self.stats.detect_due += 1
        if due and self._detect_every:
            # This frame serves the latest instant that passed; the ones before it had no frame (the
            # node was busy). The schedule keeps its grid: it used to restart at this frame, so the
            # next frame was due at once and a node that fell behind ran two detections in a row.
            passed = int((now - self._next_detect + 1e-3) / self._detect_every)
            self.stats.detect_missed += passed
            self._next_detect += self._detect_every * (passed + 1)
        clock = self.stats.stages
        if due and self.gate is not None:
            with clock("gate"):
                due = self.gate.should_detect(frame.image)
        if due:
            detections = self._detect(frame.image)
            with clock("tracking"):
                tracked = self.tracker.update(detections)
            with clock("scene"):
                events += self.scene.update(frame.ts, now, self._observations(tracked, frame.image.shape))
        else:
            self.stats.skipped += 1
            self._m_skipped.inc()
            with clock("scene"):
                events += self.scene.expire(frame.ts, now)
        self.tracked = tracked
        if self._geometry_due:
            events.insert(0, NewEvent(frame.ts, "geometry", {"version": self.scene.geometry, **self.scene.geometry_doc}))
            self._geometry_due = False
        if self.scene.zones and now >= self._next_occupancy:
            events += self.scene.occupancy(frame.ts)
            self._next_occupancy = now + self.config.occupancy_interval_s
        stored = self._finish_step(frame.ts, events, report)
        if self.debug and tracked is not None:
            self.debug.maybe_write(frame, tracked, events, self.detector, self.scene)
        if self.on_snapshot is not None and now >= self._next_snapshot:
            self.on_snapshot(self._snapshot(frame.image))
            self._next_snapshot = now + self.config.snapshots.every_s
        return stored

    def idle(self, tick: Idle) -> list[Event]:
        """Time passes without a frame (a live stream starting, stalled or down):
        tracks time out, minutes close, health goes on, with the video state."""
        self.now = tick.media_s
        self.last_ts = tick.ts
        self.tracked = None
        return self._finish_step(tick.ts, self.scene.expire(tick.ts, tick.media_s))

    def _finish_step(self, ts: int, events: list[NewEvent], report: bool = False) -> list[Event]:
        now = self.now
        video = self.video.state if self.video is not None else "ok"
        if video in ("ok", "stalled", "down") and video != self._video_reported:
            report = True  # the cloud hears of a stall or an outage now, not at the next report
        if report or now >= self._next_health:
            events.append(self.health(ts))
            self._next_health = now + self.config.health_interval_s
        stored: list[Event] = []
        if events or now >= self._next_state:
            with self.stats.stages("outbox"):
                stored = self._store(events)
            self._next_state = now + STATE_EVERY_S
        return stored

    def _snapshot(self, image: np.ndarray) -> bytes:
        import cv2

        snap = self.config.snapshots
        h, w = image.shape[:2]
        small = cv2.resize(image, (snap.width, max(1, round(h * snap.width / w))), interpolation=cv2.INTER_AREA)
        return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, snap.quality])[1].tobytes()

    def finish(self, source_ended: bool) -> list[Event]:
        """After the last frame: end every track if the source is over, else keep them for a restart."""
        return self._store(self.scene.end_all(self.last_ts) if source_ended else [], close_all=source_ended)

    def _detect(self, image: np.ndarray):
        if self.switch is not None:
            self.detector = self.switch.current()  # a rolled-out model comes in between frames
        started = time.perf_counter()
        try:
            detections = self.detector(image, self.stats.stages)
        except Exception as exc:
            if self.switch is None or not self.switch.on_probation:
                raise
            # The new model failed on this frame: the old one runs it instead.
            self.detector = self.switch.roll_back(f"inference failed: {exc}")
            started = time.perf_counter()
            detections = self.detector(image)
        elapsed = time.perf_counter() - started
        if self.switch is not None:
            self.detector = self.switch.observe(elapsed)
        self.stats.inference_ms.append(elapsed * 1000)
        self._m_inference.observe(elapsed)
        self.stats.detector_runs += 1
        self._count_people(detections)
        return detections

    def _count_people(self, detections: Detections) -> None:
        classes = self.detector.spec.classes
        if "person" not in classes or not len(detections):
            return
        people = detections.xyxy[(detections.class_id == classes.index("person")) & (detections.confidence >= self._activation)]
        self.stats.people_seen += len(people)
        self.stats.people_overlapping += crowding.overlapping(people)

    def _observations(self, tracked: list[TrackedObject], shape: tuple[int, ...]) -> list[Observation]:
        h, w = shape[:2]
        return [
            Observation(
                t.track_id, self.detector.class_name(t.class_id), t.confidence, t.anchor(w, h),
                (t.xyxy[0] / w, t.xyxy[1] / h, t.xyxy[2] / w, t.xyxy[3] / h),
            )
            for t in tracked
        ]

    def health(self, ts: int) -> NewEvent:
        """A health report; frame counts cover the time since the previous one,
        so the cloud can add them up per minute."""
        p50, p95 = self.stats.inference_percentiles()
        missed_total = self.video.missed if self.video is not None else 0
        frames, skipped = self.stats.frames - self._reported[0], self.stats.skipped - self._reported[1]
        missed = missed_total - self._reported[2]
        people, overlapping = self.stats.people_seen - self._reported[3], self.stats.people_overlapping - self._reported[4]
        self._reported = (self.stats.frames, self.stats.skipped, missed_total, self.stats.people_seen, self.stats.people_overlapping)
        data = {
            "uptime_s": round(time.monotonic() - self.stats.started, 1),
            "fps": round(self.stats.fps(), 2),
            "frames": frames,
            "frames_skipped": skipped,
            "inference_ms_p50": round(p50, 2),
            "inference_ms_p95": round(p95, 2),
            "outbox_depth": self.outbox.depth(),
            "outbox_age_s": round(self.outbox.oldest_age_s(ts), 1),
            "dropped_events": self.outbox.dropped,
            "model_version": self.detector.spec.version,
            # How much the people in view hid each other since the last report
            # (edge/crowding.py): the cloud adds them up per minute and warns
            # when a camera's counts run low.
            "people_seen": people,
            "people_overlapping": overlapping,
        }
        if self.video is not None and self.video.state in ("ok", "stalled", "down"):
            self._video_reported = self.video.state
            data["video_state"] = self.video.state
            data["video_reconnects"] = self.video.reconnects
            data["video_lost_s"] = round(self.video.lost_s(), 1)
            # Live frames a newer one replaced while the node was busy: a steady
            # share says the box runs more cameras than it can (an overloaded alert).
            data["frames_missed"] = missed
        if self.tamper is not None:
            data["tamper"] = sorted(self.tamper.active)
        clock = self.clock() if self.clock else None
        if clock is not None:
            data["clock_offset_s"], data["clock_error_s"] = round(clock[0], 3), round(clock[1], 3)
        return NewEvent(ts, "health", data)

    def _store(self, events: list[NewEvent], close_all: bool = False) -> list[Event]:
        # The scene's state goes in the same transaction as the events it
        # caused; minutes before this frame are over and reported.
        stored = self.outbox.append(events, state=self.scene.snapshot(self.now), close_at=self.last_ts or None, close_all=close_all)
        for event in stored:
            self.stats.events[event.type] += 1
            edge_metrics.EDGE_EVENTS.labels(self.config.camera_id, event.type).inc()
        if stored and self.on_stored:
            self.on_stored(stored)
        return stored


class DebugWriter:
    """Annotated frames on local disk, so an operator can see what is counted."""

    def __init__(self, directory: Path, config: CameraConfig, every: int = 25, keep: int = 500) -> None:
        self.directory = directory
        self.config = config
        self.every = every
        self.keep = keep
        self.written = 0
        directory.mkdir(parents=True, exist_ok=True)

    def maybe_write(self, frame: Frame, tracked: list[TrackedObject], events: list[NewEvent], detector: ObjectDetector, scene: Scene) -> None:
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
            cv2.putText(image, zone.name, tuple(int(v) for v in pts[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 120, 0), 1)
        for t in tracked:
            x1, y1, x2, y2 = (int(v) for v in t.xyxy)
            cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
            state = scene.tracks.get(t.track_id)  # label with the id the events carry
            label = f"#{state.track_id if state else '?'} {detector.class_name(t.class_id)} {t.confidence:.2f}"
            cv2.putText(image, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
        cv2.imwrite(str(self.directory / f"{self.config.camera_id}-{self.written % self.keep:04d}.jpg"), image)
        self.written += 1
