"""The object detector the pipeline runs: an ONNX model of one of the
families in ``edge.families``, run by onnxruntime.

Shipped model files lie inside the package (``edge/models/``); every file,
shipped or brought, is checked against its pinned sha256 before it is
loaded (``edge.model_spec``); nothing is ever fetched at run time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import onnxruntime as ort

from edge.families import Family, Layout, family
from edge.model_spec import ModelError, ModelSpec, model_spec, verify

if TYPE_CHECKING:
    from edge.config import CameraConfig
    from edge.stages import StageClock

log = logging.getLogger("fleetsight.detector")

# Most capable first; onnxruntime falls back to the CPU for what they lack.
PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider")


@dataclass
class Detections:
    """Boxes in frame pixels (x1, y1, x2, y2), confidences and class ids."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.confidence)


class ObjectDetector(Protocol):
    """What the pipeline, the model switch, the site and the accuracy suite need of a detector."""

    @property
    def spec(self) -> ModelSpec: ...

    def __call__(self, frame: np.ndarray, clock: StageClock | None = None) -> Detections:
        """Detections in a BGR frame; ``clock`` adds up the CPU of each step."""
        ...

    def class_name(self, class_id: int) -> str: ...


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression per class (boxes x1, y1, x2, y2); kept indices, best first.

    OpenCV's, native: a box goes when it overlaps a better one of its class by
    more than ``iou`` (tests/unit/test_detector.py holds the numpy loop it
    replaced, 0.37 against 0.08 ms a frame here, and checks both keep the same).
    """
    if not len(scores):
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
    # OpenCV's stubs ask for sequences; it takes arrays (and copies less).
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores.astype(np.float32), classes.astype(np.int32), 0.0, iou)  # type: ignore[arg-type]
    return np.asarray(kept, dtype=np.int64).reshape(-1)


class _SharedSession:
    """One onnxruntime session for every camera of a process that runs the same
    model file with the same settings, and as many runs at once as the cores
    allow: one at a time when each run uses every core (``model.threads``
    unset), one per core with ``model.threads: 1``.

    Each session holds the model's weights and its own thread pool; eight
    cameras with eight sessions each running on every core at once only
    fight over the cores, and the cameras' other work (decoding, gate,
    tracking) waits behind them.
    """

    def __init__(self, session: ort.InferenceSession, threads: int | None) -> None:
        self.session = session
        cores = os.cpu_count() or 1
        self.slots = threading.BoundedSemaphore(max(1, cores // (threads or cores)))


_sessions: weakref.WeakValueDictionary[tuple[object, ...], _SharedSession] = weakref.WeakValueDictionary()
_sessions_lock = threading.Lock()


def _shared_session(path: Path, sha256: str, threads: int | None, providers: tuple[str, ...]) -> _SharedSession:
    """The process's session for this file and settings (loaded on first use,
    freed with the last detector that uses it)."""
    key = (str(path), sha256.lower(), threads, providers)
    with _sessions_lock:
        shared = _sessions.get(key)
        if shared is not None:
            return shared
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's pool threads spin after each run, waiting for the next;
        # on an edge box that time belongs to the video decoders and trackers.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            shared = _SharedSession(ort.InferenceSession(str(path), options, providers=list(providers)), threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime could not load {path}: {exc}") from exc
        _sessions[key] = shared
        return shared


class Detector:
    """Runs a model of any family on BGR frames; thresholds and class filter from config."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        confidence: float | None = None,
        iou: float = 0.5,
        classes: Sequence[str] | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        letterbox: bool = True,
    ) -> None:
        verify(spec.path, spec.sha256)
        self.spec = spec
        self.confidence = spec.confidence if confidence is None else confidence
        self.iou = iou
        unknown = sorted(set(classes or ()) - set(spec.classes))
        if unknown:
            raise ModelError(f"classes not known to {spec.name}: {', '.join(unknown)}")
        self.class_mask = (
            np.isin(np.array(spec.classes), list(classes)) if classes else np.ones(len(spec.classes), bool)
        )
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PROVIDER_PREFERENCE) if p in available] or ["CPUExecutionProvider"]
        self._shared = _shared_session(spec.path, spec.sha256, threads, tuple(chosen))
        self.session = self._shared.session
        self.providers = self.session.get_providers()
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.family: Family = family(
            spec, free_shape=not all(isinstance(d, int) for d in model_input.shape[2:]), letterbox=letterbox
        )
        self._check_outputs()
        log.info("model %s (%s) loaded from %s on %s", spec.version, spec.family, spec.path.name, ", ".join(self.providers))

    def _check_outputs(self) -> None:
        """One run on a square input: the family names the outputs it reads, or refuses the file
        (a model with a free input shape gives its output shapes only once it has run)."""
        size = self.spec.input_size
        try:
            outputs = self.session.run(None, {self.input_name: np.zeros((1, 3, size, size), np.float32)})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.spec.path.name} does not run on a {size}x{size} input: {exc}") from exc
        self.family.check([o.name for o in self.session.get_outputs()], outputs)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, Layout]:
        """BGR frame -> NCHW blob, and the layout to map boxes back with."""
        return self.family.blob(frame)

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        with self._shared.slots:
            return self.session.run(self.family.output_names, {self.input_name: blob})

    def postprocess(self, outputs: list[np.ndarray], lay: Layout, shape: tuple[int, ...]) -> Detections:
        boxes, scores, classes = self.family.decode(outputs, lay, self.confidence, self.class_mask)
        if not len(scores):
            return Detections.empty()
        keep = nms(boxes, scores, classes, self.iou)
        boxes = (boxes[keep] - [lay.pad_x, lay.pad_y, lay.pad_x, lay.pad_y]) / [lay.scale_x, lay.scale_y, lay.scale_x, lay.scale_y]
        h, w = shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        return Detections(boxes, scores[keep].astype(np.float32), classes[keep].astype(np.int64))

    def __call__(self, frame: np.ndarray, clock: StageClock | None = None) -> Detections:
        """Detections in ``frame``; ``clock`` adds up the CPU of each step."""
        if clock is None:
            blob, lay = self.preprocess(frame)
            return self.postprocess(self.infer(blob), lay, frame.shape)
        with clock("preprocess"):
            blob, lay = self.preprocess(frame)
        with clock("inference"):
            outputs = self.infer(blob)
        with clock("nms"):  # the boxes out of the model's distributions, then NMS
            return self.postprocess(outputs, lay, frame.shape)

    def class_name(self, class_id: int) -> str:
        return self.spec.classes[class_id]


def thresholds(config: CameraConfig, spec: ModelSpec) -> tuple[float, float]:
    """The camera's detection thresholds: its own, else its model family's (chosen on the suite)."""
    return (
        spec.confidence if config.detect.confidence is None else config.detect.confidence,
        spec.track_low if config.detect.track_low is None else config.detect.track_low,
    )


def build_detector(config: CameraConfig, spec: ModelSpec | None = None) -> Detector:
    """The detector a camera's config asks for, or ``spec``'s model with the
    config's settings (its file verified before loading)."""
    spec = spec or model_spec(config.model.name, config.model.path, config.model.sha256)
    if config.model.input_size:
        spec = dataclasses.replace(spec, input_size=config.model.input_size)
    return Detector(
        spec,
        confidence=min(thresholds(config, spec)),
        iou=config.detect.iou,
        classes=config.detect.classes,
        threads=config.model.threads,
        providers=config.model.providers,
        letterbox=config.model.letterbox,
    )
