"""How true the edge's counts are: the real pipeline over an annotated clip,
compared with the counts the annotation gives through the same geometry.

The annotation is in MOTChallenge format, one box per line::

    frame, id, left, top, width, height, considered, ...

(frame 1 is the video's first frame; an id is one real object). MOT16 and
later files have 9 columns, the 8th a class: only pedestrians (class 1) are
people to count; distractors, occluders, reflections and the rest are places
where a detection is neither right nor wrong (MOTChallenge's "ignore"
regions). Older 10-column files (MOT15, PETS) end in world coordinates and
every row is an object to count. The truth
runs each annotated object's anchor (bottom centre of its box, as the edge
uses) through a :class:`~edge.scene.Scene` with the camera's own lines,
zones and band, at every frame of the clip. The edge side is the camera's
detector, tracker and scene, fed every ``stride``-th frame (a lower
detection rate), optionally under a picture condition (``edge/conditions.py``:
dusk, night, compression, half resolution). Tracking metrics (MOTA, IDF1, ID switches, fragmentations)
come from py-motmetrics.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.capture import Frame
from edge.conditions import CONDITIONS, Condition
from edge.config import CameraConfig, LineConfig, ZoneConfig
from edge.crowding import CROWDED
from edge.detector import Detections, ObjectDetector, build_detector, thresholds
from edge.events import NewEvent
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene
from edge.scene import Observation, Zone
from edge.stages import StageClock

# 2026-01-01T00:00:00Z: the clip's event-time minutes start with the clip.
BASE_TS = 1_767_225_600_000
MINUTE_MS = 60_000
MOT_METRICS = ("mota", "idf1", "num_switches", "num_fragmentations", "precision", "recall")
PEDESTRIAN = 1  # MOT16's class column: the only class that is a person to count


class AnnotationError(ValueError):
    """An annotation file that cannot be read as MOTChallenge ground truth."""


@dataclass(frozen=True)
class Box:
    """One annotated object in one frame, in pixels; ``counted`` False for an
    ignore region (a distractor, an occluder, a reflection)."""

    identity: int
    left: float
    top: float
    width: float
    height: float
    counted: bool = True
    visibility: float = 1.0  # MOT16's 9th column: the share of the person not hidden (1 where not annotated)

    def anchor(self, frame_w: int, frame_h: int) -> tuple[float, float]:
        return ((self.left + self.width / 2) / frame_w, (self.top + self.height) / frame_h)

    def mirrored(self, frame_w: int) -> Box:
        return Box(self.identity, frame_w - self.left - self.width, self.top, self.width, self.height, self.counted, self.visibility)

    def scaled(self, k: float) -> Box:
        return Box(self.identity, self.left * k, self.top * k, self.width * k, self.height * k, self.counted, self.visibility)


Annotation = dict[int, list[Box]]  # frame index (0-based) -> boxes


def load_annotation(path: Path | str) -> Annotation:
    """Read a MOTChallenge ``gt.txt``; frame 1 becomes index 0.

    With 9 columns (MOT16 on) the 8th is the class and only pedestrians are
    counted; other rows are kept as ignore regions (``Box.counted`` False).
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise AnnotationError(f"{path}: not comma-separated numbers: {exc}") from None
    if rows.size == 0 or rows.shape[1] < 6:
        raise AnnotationError(f"{path}: expected at least 6 columns (frame, id, left, top, width, height)")
    classes = rows[:, 7] if rows.shape[1] == 9 else np.full(len(rows), PEDESTRIAN)
    visible = rows[:, 8] if rows.shape[1] == 9 else np.ones(len(rows))
    boxes: Annotation = defaultdict(list)
    for (frame, identity, left, top, width, height), cls, vis in zip(rows[:, :6], classes, visible):
        if frame < 1:
            raise AnnotationError(f"{path}: frame numbers start at 1, found {frame:g}")
        boxes[int(frame) - 1].append(Box(int(identity), left, top, width, height, counted=int(cls) == PEDESTRIAN, visibility=float(vis)))
    return dict(boxes)


def identities(annotation: Annotation) -> int:
    """How many objects to count the annotation holds (ignore regions left out)."""
    return len({b.identity for boxes in annotation.values() for b in boxes if b.counted})


def mirror_config(config: CameraConfig) -> CameraConfig:
    """The same camera seen in a mirror: every x becomes 1 - x."""

    def flip(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(round(1.0 - x, 6), y) for x, y in points]

    return config.model_copy(update={
        "lines": [LineConfig(name=ln.name, points=tuple(flip(ln.points))) for ln in config.lines],
        "zones": [ZoneConfig(name=z.name, polygon=flip(z.polygon)) for z in config.zones],
    })


class _Event(Protocol):
    ts: int
    type: str
    data: dict[str, Any]


@dataclass
class Counts:
    """What a camera reports for one class, as SQL would sum it."""

    crossings: Counter = field(default_factory=Counter)  # (line, direction) -> crossings
    entries: Counter = field(default_factory=Counter)  # zone -> entries
    exits: Counter = field(default_factory=Counter)  # zone -> exits
    occupancy: dict[tuple[str, int], float] = field(default_factory=dict)  # (zone, minute) -> mean
    tracks: int = 0  # tracks started ("objects")

    @classmethod
    def from_events(cls, events: Iterable[_Event], class_name: str) -> Counts:
        counts = cls()
        samples: dict[tuple[str, int], list[int]] = defaultdict(list)
        for e in events:
            if e.type == "occupancy":
                samples[(e.data["zone"], (e.ts - BASE_TS) // MINUTE_MS)].append(e.data["counts"].get(class_name, 0))
            elif e.data.get("class") != class_name:
                continue
            elif e.type == "line.cross":
                counts.crossings[(e.data["line"], e.data["direction"])] += 1
            elif e.type == "zone.enter":
                counts.entries[e.data["zone"]] += 1
            elif e.type == "zone.exit":
                counts.exits[e.data["zone"]] += 1
            elif e.type == "track.start":
                counts.tracks += 1
        counts.occupancy = {key: sum(v) / len(v) for key, v in samples.items()}
        return counts


def frame_ts(index: int, fps: float) -> int:
    return BASE_TS + round(index * 1000 / fps)


def truth_events(
    annotation: Annotation, config: CameraConfig, frames: int, fps: float, size: tuple[int, int], class_name: str = "person",
) -> list[Any]:
    """What the camera's scene makes of the annotated people, every frame (tracks, crossings, zones)."""
    w, h = size
    scene = build_scene(config)
    scene.join_s = 0.0  # annotated identities are exact: nothing to join
    events: list[Any] = []
    for i in range(frames):
        observations = [Observation(b.identity, class_name, 1.0, b.anchor(w, h)) for b in annotation.get(i, []) if b.counted]
        events += scene.update(frame_ts(i, fps), i / fps, observations)
    return events + scene.end_all(frame_ts(frames - 1, fps))


def truth_counts(
    annotation: Annotation, config: CameraConfig, fps: float, size: tuple[int, int], sample_frames: Iterable[int],
    scene_events: list[Any], class_name: str = "person",
) -> Counts:
    """Counts the annotation gives through the camera's geometry: ``scene_events``
    (from :func:`truth_events`, the same at every rate) and occupancy sampled at
    ``sample_frames`` (the frames the edge reported occupancy on), so both sides
    average the same instants.
    """
    w, h = size
    events = list(scene_events)
    zones = [Zone(z.name, tuple(z.polygon)) for z in config.zones]
    for i in sample_frames:
        anchors = [b.anchor(w, h) for b in annotation.get(i, []) if b.counted]
        for zone in zones:
            inside = sum(zone.contains(p) for p in anchors)
            events.append(NewEvent(frame_ts(i, fps), "occupancy", {"zone": zone.name, "counts": {class_name: inside}}))
    return Counts.from_events(events, class_name)


def _iou_distances(gt: np.ndarray, hyp: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU of (x, y, w, h) boxes, NaN below ``min_iou`` (motmetrics' convention).

    motmetrics 1.4's own ``iou_matrix`` calls ``np.asfarray``, gone in NumPy 2.
    """
    if not len(gt) or not len(hyp):
        return np.empty((len(gt), len(hyp)))
    g = np.column_stack([gt[:, :2], gt[:, :2] + gt[:, 2:]])[:, None, :]
    k = np.column_stack([hyp[:, :2], hyp[:, :2] + hyp[:, 2:]])[None, :, :]
    iw = np.clip(np.minimum(g[..., 2], k[..., 2]) - np.maximum(g[..., 0], k[..., 0]), 0, None)
    ih = np.clip(np.minimum(g[..., 3], k[..., 3]) - np.maximum(g[..., 1], k[..., 1]), 0, None)
    inter = iw * ih
    union = (gt[:, 2] * gt[:, 3])[:, None] + (hyp[:, 2] * hyp[:, 3])[None, :] - inter
    dist = 1.0 - inter / np.maximum(union, 1e-9)
    dist[dist > 1.0 - min_iou] = np.nan
    return dist


def summed_error(truth: Counter | dict, counted: Counter | dict) -> float:
    """Summed absolute difference per key over the true total (0 when there is no truth)."""
    keys = set(truth) | set(counted)
    total = sum(truth.get(k, 0) for k in keys)
    return sum(abs(counted.get(k, 0) - truth.get(k, 0)) for k in keys) / total if total else 0.0


@dataclass
class RateResult:
    """One run of the edge over the clip at one detection rate, against the truth."""

    label: str
    stride: int
    fps: float
    truth: Counts
    counted: Counts
    identities: int
    mot: dict[str, float]
    detector_runs: int
    mirrored: bool = False
    condition: str = "daylight"
    scene: str = ""
    ignored_tracks: int = 0  # tracks seen mostly on a reflection, distractor or occluder (MOT16 annotations)
    crowding: float | None = None  # share of the people seen overlapping another (edge/crowding.py)

    @property
    def crossing_error(self) -> float:
        """Summed absolute error per line and direction over the true crossings."""
        return summed_error(self.truth.crossings, self.counted.crossings)

    @property
    def entry_error(self) -> float:
        return summed_error(self.truth.entries, self.counted.entries)

    @property
    def exit_error(self) -> float:
        return summed_error(self.truth.exits, self.counted.exits)

    @property
    def occupancy_error(self) -> float:
        """Summed absolute error of the per-minute mean occupancy over the true means."""
        return summed_error(self.truth.occupancy, self.counted.occupancy)

    @property
    def tracks_ratio(self) -> float:
        return self.counted.tracks / self.identities if self.identities else 0.0


class _FrameMemo:
    """The detector, run at most once per frame however many rates look at it.

    Runs at several rates go over the clip together; every 2nd frame of the
    10 fps run is a frame of the 5 fps run, and the model's answer for a
    frame does not depend on who asks.
    """

    def __init__(self, detector: ObjectDetector) -> None:
        self.detector = detector
        self.spec = detector.spec
        self.frame = -1
        self._memo: Detections | None = None

    def at(self, index: int) -> None:
        if index != self.frame:
            self.frame, self._memo = index, None

    def __call__(self, frame: np.ndarray, clock: StageClock | None = None) -> Detections:
        if self._memo is None:
            self._memo = self.detector(frame, clock)
        return self._memo

    def class_name(self, class_id: int) -> str:
        return self.detector.class_name(class_id)


class _MotTally:
    """py-motmetrics' accumulator, with MOTChallenge's ignore regions: a box
    on a distractor, an occluder or a reflection that matches no person is
    neither a hit nor a false positive."""

    def __init__(self, scale: float) -> None:
        import motmetrics as mm  # the eval extra; only evaluation needs it

        self.accumulator = mm.MOTAccumulator(auto_id=True)
        self.scale = scale
        self.sightings: dict[int, Counter] = defaultdict(Counter)  # track -> sightings on a person / an ignore region

    def update(self, gt: list[Box], hyps: list[tuple[int, tuple[float, float, float, float]]]) -> None:
        people = [b.scaled(self.scale) for b in gt if b.counted]
        ignored = np.array([[b.left, b.top, b.width, b.height] for b in (b.scaled(self.scale) for b in gt if not b.counted)]).reshape(-1, 4)
        gt_boxes = np.array([[b.left, b.top, b.width, b.height] for b in people]).reshape(-1, 4)
        hyp_boxes = np.array([[x1, y1, x2 - x1, y2 - y1] for _, (x1, y1, x2, y2) in hyps]).reshape(-1, 4)
        dist = _iou_distances(gt_boxes, hyp_boxes)
        keep = np.ones(len(hyps), bool)
        on_person = ~np.isnan(dist).all(0) if len(people) else np.zeros(len(hyps), bool)
        if len(ignored) and len(hyps):
            keep = on_person | np.isnan(_iou_distances(ignored, hyp_boxes)).all(0)
        for (tid, _), person, k in zip(hyps, on_person, keep):
            self.sightings[tid]["person" if person else "ignored" if not k else "nothing"] += 1
        self.accumulator.update([b.identity for b in people], [tid for (tid, _), k in zip(hyps, keep) if k], dist[:, keep])

    def ignored_tracks(self) -> int:
        """Tracks seen mostly on a reflection, a distractor or an occluder: people that are not there."""
        return sum(c.most_common(1)[0][0] == "ignored" for c in self.sightings.values())

    def summary(self) -> dict[str, float]:
        import motmetrics as mm

        summary = mm.metrics.create().compute(self.accumulator, metrics=list(MOT_METRICS), name="edge")
        return {name: float(summary[name].iloc[0]) for name in MOT_METRICS}


def evaluate(
    config: CameraConfig, video: Path | str, annotation: Annotation, *, stride: int = 1, mirror: bool = False,
    class_name: str = "person", progress: Callable[[int, int], None] | None = None, condition: Condition | None = None,
) -> RateResult:
    """Run the camera's pipeline over ``video`` at every ``stride``-th frame and compare."""
    return evaluate_rates(config, video, annotation, strides=(stride,), mirror=mirror, class_name=class_name,
                          progress=progress, condition=condition)[0]


def evaluate_rates(
    config: CameraConfig, video: Path | str, annotation: Annotation, *, strides: Iterable[int] = (1, 2), mirror: bool = False,
    class_name: str = "person", progress: Callable[[int, int], None] | None = None, condition: Condition | None = None,
    scene: str = "",
) -> list[RateResult]:
    """Run the camera's pipeline over ``video`` at several rates at once (every
    ``stride``-th frame each), the frames shown under ``condition``, and compare
    each with the annotation. One decode, and one detector run per frame."""
    condition = condition or CONDITIONS["daylight"]
    strides = list(strides)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if mirror:
        config = mirror_config(config)
        annotation = {i: [b.mirrored(width) for b in boxes] for i, boxes in annotation.items()}
    detector = _FrameMemo(build_detector(config))
    tallies = [_MotTally(condition.scale) for _ in strides]
    events: list[list[Any]] = [[] for _ in strides]
    frames = 0
    with tempfile.TemporaryDirectory(prefix="fleetsight-eval-") as tmp:
        outboxes = [Outbox(Path(tmp) / f"outbox-{n}.sqlite3", config.camera_id, config.site) for n in range(len(strides))]
        pipelines = [
            Pipeline(config, detector, build_scene(config), outbox, fps / stride)
            for stride, outbox in zip(strides, outboxes)
        ]
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                index = frames
                frames += 1
                if progress:
                    progress(frames, total)
                if all(index % stride for stride in strides):
                    continue
                if mirror:
                    image = cv2.flip(image, 1)
                image = condition.apply(image, index)
                detector.at(index)
                for stride, pipeline, tally, out in zip(strides, pipelines, tallies, events):
                    if index % stride:
                        continue
                    out += pipeline.step(Frame(index, frame_ts(index, fps), index / fps, image))
                    if pipeline.tracked is not None:
                        hyps = [
                            (pipeline.scene.tracks[t.track_id].track_id, t.xyxy)
                            for t in pipeline.tracked if detector.class_name(t.class_id) == class_name
                        ]
                        tally.update(annotation.get(index, []), hyps)
            for pipeline, out in zip(pipelines, events):
                out += pipeline.finish(source_ended=True)
        finally:
            cap.release()
            for outbox in outboxes:
                outbox.close()
    people = identities(annotation)
    scene_events = truth_events(annotation, config, frames, fps, (width, height), class_name)
    results = []
    for stride, pipeline, tally, out in zip(strides, pipelines, tallies, events):
        counted = Counts.from_events(out, class_name)
        samples = sorted({round((e.ts - BASE_TS) * fps / 1000) for e in out if e.type == "occupancy"})
        truth = truth_counts(annotation, config, fps, (width, height), samples, scene_events, class_name)
        label = " ".join(filter(None, [scene, condition.name if condition.name != "daylight" else "", f"{fps / stride:.3g} fps",
                                       "mirrored" if mirror else ""]))
        results.append(RateResult(label, stride, fps / stride, truth, counted, people, tally.summary(),
                                  pipeline.stats.detector_runs, mirror, condition.name, scene, tally.ignored_tracks(),
                                  pipeline.stats.crowding()))
    return results


HIDDEN = 0.5  # a person less visible than this is "mostly hidden" (MOT16's visibility column)


@dataclass
class DetectionQuality:
    """The detector's boxes against the annotated people (IoU >= 0.5), with
    people mostly hidden (visibility < ``HIDDEN``) apart from the rest."""

    people: Counter = field(default_factory=Counter)  # "hidden" / "visible" -> annotated boxes
    found: Counter = field(default_factory=Counter)  # ... of which a detection matched
    false: int = 0  # detections on no person and no ignore region

    def recall(self, band: str | None = None) -> float:
        """Share of the annotated people found, in one band or all."""
        people = self.people[band] if band else sum(self.people.values())
        found = self.found[band] if band else sum(self.found.values())
        return found / people if people else 0.0

    @property
    def precision(self) -> float:
        found = sum(self.found.values())
        return found / (found + self.false) if found + self.false else 0.0

    def add(self, gt: list[Box], boxes: np.ndarray) -> None:
        """One frame: annotated boxes and the detections (x1, y1, x2, y2)."""
        from scipy.optimize import linear_sum_assignment  # the eval extra, as motmetrics

        people = [b for b in gt if b.counted]
        ignored = [b for b in gt if not b.counted]
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]) if len(boxes) else np.zeros((0, 4))
        dist = _iou_distances(np.array([[b.left, b.top, b.width, b.height] for b in people]).reshape(-1, 4), xywh)
        rows, cols = linear_sum_assignment(np.nan_to_num(dist, nan=1e6)) if dist.size else ((), ())
        pairs = {r: c for r, c in zip(rows, cols) if not np.isnan(dist[r, c])}
        for i, b in enumerate(people):
            band = "hidden" if b.visibility < HIDDEN else "visible"
            self.people[band] += 1
            self.found[band] += i in pairs
        rest = [c for c in range(len(boxes)) if c not in pairs.values()]
        if rest and ignored:
            near = _iou_distances(np.array([[b.left, b.top, b.width, b.height] for b in ignored]), xywh[rest])
            rest = [c for c, hit in zip(rest, (~np.isnan(near)).any(0)) if not hit]
        self.false += len(rest)


def detection_quality(config: CameraConfig, video: Path | str, annotation: Annotation, *, every: int = 3, class_name: str = "person") -> DetectionQuality:
    """The camera's detector (its model, family and thresholds) on every ``every``-th
    frame of ``video``, box by box against the annotation: the detections sure
    enough to start a track (``detect.confidence``)."""
    detector = build_detector(config)
    confidence = thresholds(config, detector.spec)[0]
    quality = DetectionQuality()
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    index = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if index % every == 0:
                found = detector(image)
                wanted = np.array([detector.class_name(c) == class_name for c in found.class_id], bool) & (found.confidence >= confidence)
                quality.add(annotation.get(index, []), found.xyxy[wanted] if len(found) else found.xyxy)
            index += 1
    finally:
        cap.release()
    return quality


def every_nth(n: int) -> str:
    """'every frame', 'every 2nd frame', ..."""
    if n == 1:
        return "every frame"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} frame"


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def format_report(results: list[RateResult]) -> str:
    """Markdown: per-rate tables (truth, counted, error) and a summary table."""
    out: list[str] = []
    for r in results:
        out += [f"### {r.label} ({every_nth(r.stride)}, {r.detector_runs} detector runs)", ""]
        out += ["| line | direction | truth | counted | error |", "| --- | --- | ---: | ---: | ---: |"]
        for key in sorted(set(r.truth.crossings) | set(r.counted.crossings)):
            t, c = r.truth.crossings.get(key, 0), r.counted.crossings.get(key, 0)
            out.append(f"| {key[0]} | {key[1]} | {t} | {c} | {_pct((c - t) / t) if t else '-'} |")
        out += ["", "| zone | entries truth / counted | exits truth / counted | mean occupancy per minute, truth / counted |",
                "| --- | ---: | ---: | --- |"]
        for zone in sorted(set(r.truth.entries) | set(r.counted.entries) | {z for z, _ in r.truth.occupancy}):
            occ = ", ".join(
                f"min {m}: {r.truth.occupancy[(z, m)]:.2f} / {r.counted.occupancy.get((z, m), 0.0):.2f}"
                for z, m in sorted(r.truth.occupancy) if z == zone
            )
            out.append(f"| {zone} | {r.truth.entries[zone]} / {r.counted.entries[zone]} | "
                       f"{r.truth.exits[zone]} / {r.counted.exits[zone]} | {occ} |")
        out.append("")
    out += ["### Summary", "",
            "| rate | crossing error | entry error | exit error | occupancy error | tracks / identities | MOTA | IDF1 | ID switches | fragmentations | crowding |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        out.append(
            f"| {r.label} | {_pct(r.crossing_error)} | {_pct(r.entry_error)} | {_pct(r.exit_error)} | {_pct(r.occupancy_error)} | "
            f"{r.counted.tracks} / {r.identities} ({r.tracks_ratio:.2f}x) | {r.mot['mota']:.3f} | {r.mot['idf1']:.3f} | "
            f"{r.mot['num_switches']:.0f} | {r.mot['num_fragmentations']:.0f} | {_crowding(r.crowding)} |"
        )
    out.append("")
    crowded = [r for r in results if r.crowding is not None and r.crowding > CROWDED]
    if crowded:
        out.append(f"- crowding {_crowding(crowded[0].crowding)}: more than {CROWDED:.0%} of the people seen overlap another here, so "
                   "people hide each other and the counts run low (README, \"Where to mount a camera\")")
    for r in results:
        base = _fastest(results, r)
        if r is not base:
            out.append(f"- {r.label} against {base.label}: crossing counts differ by {_pct(rate_invariance(base, r))} "
                       f"(per line and direction, summed)")
    return "\n".join(out) + "\n"


def _crowding(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fastest(results: list[RateResult], r: RateResult) -> RateResult:
    """The run at the highest rate of the same scene, condition and mirroring as ``r``."""
    same = [b for b in results if (b.scene, b.condition, b.mirrored) == (r.scene, r.condition, r.mirrored)]
    return min(same, key=lambda b: b.stride)


def format_suite(results: list[RateResult]) -> str:
    """Markdown: one row per scene, condition and rate, and how far each lower rate is from the highest."""
    out = ["| scene | condition | rate | crossing error | entry error | exit error | occupancy error | tracks / people | on reflections etc. "
           "| MOTA | IDF1 | vs. the higher rate | crowding |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        base = _fastest(results, r)
        out.append(
            f"| {r.scene} | {r.condition}{' mirrored' if r.mirrored else ''} | {r.fps:.3g} fps | {_pct(r.crossing_error)} | {_pct(r.entry_error)} | "
            f"{_pct(r.exit_error)} | {_pct(r.occupancy_error)} | {r.counted.tracks} / {r.identities} ({r.tracks_ratio:.2f}x) | "
            f"{r.ignored_tracks} | {r.mot['mota']:.3f} | {r.mot['idf1']:.3f} | {'' if r is base else _pct(rate_invariance(base, r))} | "
            f"{_crowding(r.crowding)} |"
        )
    return "\n".join(out) + "\n"


def format_families(by_model: dict[str, list[RateResult]]) -> str:
    """Markdown: one row per model, the worst and the range of each figure over the suite."""
    def span(values: list[float], pct: bool = True) -> str:
        lo, hi = min(values), max(values)
        return f"{100 * lo:.1f}-{100 * hi:.1f} %" if pct else f"{lo:.2f}-{hi:.2f}"

    out = ["| model | square: crossings 10 / 5 fps (worst) | square: 5 fps vs 10 (worst) | square: tracks / people | "
           "shop front: crossings 10 fps | shop front: crossings 5 fps | crowding square / shop front |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model, results in by_model.items():
        square = [r for r in results if r.scene == "pets09-s2l1"]
        shop = [r for r in results if r.scene == "mot16-09"]
        worst = {fps: max(r.crossing_error for r in square if r.fps == fps) for fps in (10.0, 5.0)}
        rates = [rate_invariance(_fastest(square, r), r) for r in square if r.fps == 5.0]
        out.append(
            f"| {model} | {_pct(worst[10.0])} / {_pct(worst[5.0])} | {_pct(max(rates))} | {span([r.tracks_ratio for r in square], False)}x | "
            f"{span([r.crossing_error for r in shop if r.fps == 10.0])} | {span([r.crossing_error for r in shop if r.fps == 5.0])} | "
            f"{span([r.crowding or 0.0 for r in square], False)} / {span([r.crowding or 0.0 for r in shop], False)} |"
        )
    return "\n".join(out) + "\n"


def format_lines(results: list[RateResult]) -> str:
    """Markdown: per line and direction, truth and what each run counted."""
    keys = sorted({(r.scene, *k) for r in results for k in set(r.truth.crossings) | set(r.counted.crossings)})
    runs = sorted({(r.condition, r.fps) for r in results}, key=lambda k: (list(CONDITIONS).index(k[0]) if k[0] in CONDITIONS else 99, -k[1]))
    out = ["| scene | line | direction | truth | " + " | ".join(f"{c} {f:.3g}" for c, f in runs) + " |",
           "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in runs) + " |"]
    by = {(r.scene, r.condition, r.fps): r for r in results if not r.mirrored}
    for scene, line, direction in keys:
        truth = next((r.truth.crossings.get((line, direction), 0) for r in results if r.scene == scene), 0)
        cells = [str(by[(scene, c, f)].counted.crossings.get((line, direction), 0)) if (scene, c, f) in by else "" for c, f in runs]
        out.append(f"| {scene} | {line} | {direction} | {truth} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def rate_invariance(a: RateResult, b: RateResult) -> float:
    """How far ``b``'s crossing counts are from ``a``'s: summed absolute difference over ``a``'s total."""
    return summed_error(a.counted.crossings, b.counted.crossings)
