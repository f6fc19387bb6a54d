"""The shipped detector on real images and video; the model file is verified."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detector import Detector, nms
from edge.model_spec import ModelError, model_spec
from edge.tracker import Tracker


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(model_spec(), confidence=0.4)


def names(detector: Detector, image: np.ndarray) -> Counter:
    found = detector(image)
    return Counter(detector.class_name(c) for c in found.class_id)


@pytest.mark.parametrize("image, people", [("person.jpg", 1), ("basketball1.png", 2), ("messi5.jpg", 2)])
def test_finds_the_people_in_real_images(detector: Detector, media: Path, image: str, people: int) -> None:
    frame = cv2.imread(str(media / image))
    assert names(detector, frame)["person"] >= people


def test_finds_animals_not_people_in_a_picture_of_horses(detector: Detector, media: Path) -> None:
    found = names(detector, cv2.imread(str(media / "horses.jpg")))
    assert found["person"] == 0
    assert found["horse"] + found["cow"] + found["sheep"] >= 3


def test_boxes_lie_inside_the_frame_and_are_plausible(detector: Detector, media: Path) -> None:
    frame = cv2.imread(str(media / "person.jpg"))
    found = detector(frame)
    h, w = frame.shape[:2]
    assert (found.xyxy[:, 0] < found.xyxy[:, 2]).all() and (found.xyxy[:, 1] < found.xyxy[:, 3]).all()
    assert found.xyxy.min() >= 0 and (found.xyxy[:, 2] <= w).all() and (found.xyxy[:, 3] <= h).all()
    person = found.xyxy[found.class_id == 0][0]
    # darknet's person.jpg: a woman left of centre, between her dog and her horse,
    # more than half the frame tall.
    assert 0.25 * w < (person[0] + person[2]) / 2 < 0.5 * w and (person[3] - person[1]) > h * 0.5


def test_people_in_every_frame_of_the_sample_video(detector: Detector, media: Path) -> None:
    cap = cv2.VideoCapture(str(media / "vtest.avi"))
    counts = []
    for _ in range(60):
        ok, frame = cap.read()
        assert ok
        counts.append(names(detector, frame)["person"])
    cap.release()
    # Seen by eye: 3 to 9 people walk through these frames.
    assert min(counts) >= 2 and 4 <= np.mean(counts) <= 10


def test_class_filter_and_threshold(media: Path) -> None:
    only_cars = Detector(model_spec(), confidence=0.4, classes=["car"])
    assert set(names(only_cars, cv2.imread(str(media / "basketball1.png")))) <= {"car"}
    with pytest.raises(ModelError, match="not known"):
        Detector(model_spec(), classes=["unicorn"])


def test_tracker_keeps_ids_on_a_real_clip(detector: Detector, media: Path) -> None:
    cap = cv2.VideoCapture(str(media / "vtest.avi"))
    tracker = Tracker(fps=10, min_hits=3, lost_s=2.0)
    lifetime: Counter = Counter()
    per_frame = []
    for _ in range(120):
        ok, frame = cap.read()
        tracked = tracker.update(detector(frame))
        per_frame.append(len(tracked))
        lifetime.update(t.track_id for t in tracked)
    cap.release()
    # About 6 people at a time over 12 s: a tracker that lost them would mint
    # an id every few frames; most ids must live most of the clip.
    assert np.mean(per_frame) >= 4
    assert len(lifetime) <= 25
    assert sum(1 for n in lifetime.values() if n >= 60) >= 4


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    spec = model_spec()
    copy = tmp_path / "model.onnx"
    shutil.copy(spec.path, copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ModelError, match="sha256"):
        Detector(model_spec(spec.name, copy, spec.sha256))
    with pytest.raises(ModelError, match="needs model.sha256"):
        model_spec(spec.name, copy)


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """The numpy loop the detector ran before OpenCV's NMS: the reference ``nms`` must agree with."""
    boxes = boxes + classes[:, None] * 4096.0  # classes far apart: boxes of two classes never suppress each other
    order = scores.argsort(kind="stable")[::-1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / (area[i] + area[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def test_opencv_nms_keeps_what_the_numpy_reference_keeps() -> None:
    rng = np.random.default_rng(7)
    # Crowds: candidate boxes scattered around 40 objects of three classes, as a detector's raw output is.
    centres = rng.uniform(0, 600, (40, 2))
    picks = rng.integers(0, 40, 400)
    size = rng.uniform(20, 120, (40, 2))[picks]
    xy = centres[picks] + rng.normal(0, 8, (400, 2))
    boxes = np.concatenate([xy - size / 2, xy + size / 2], 1).astype(np.float32)
    scores = rng.uniform(0.15, 1.0, 400).astype(np.float32)
    classes = picks % 3  # each object one class; two objects of different classes may overlap
    for iou in (0.3, 0.5, 0.7):
        kept = nms(boxes, scores, classes, iou)
        assert 40 <= len(kept) < 400
        assert kept.tolist() == nms_numpy(boxes, scores, classes, iou).tolist()
    assert nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []
