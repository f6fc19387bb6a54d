"""The pipeline across a video gap, and what it reports while there is no video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from edge.capture import Frame, Idle
from edge.config import CameraConfig, DetectConfig, LineConfig, OutboxConfig, SourceConfig, TamperConfig
from edge.detector import build_detector
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene
from schemas.codec import Event

T0 = 1764072000000


@dataclass
class Video:
    """What the pipeline reads of a live source (``edge.capture.VideoSource``)."""

    state: str = "ok"
    reconnects: int = 0
    lost: float = 0.0
    missed: int = 0

    def lost_s(self) -> float:
        return self.lost


def make(tmp_path: Path, video: Video, tamper: bool = False) -> tuple[Pipeline, list[Event]]:
    config = CameraConfig(
        camera_id="cam-gap", site="s", source=SourceConfig(uri="rtsp://127.0.0.1/cam"), detect=DetectConfig(fps=5),
        lines=[LineConfig(name="crosswalk", points=((0.05, 0.55), (0.95, 0.55)))], health_interval_s=30,
        outbox=OutboxConfig(path=tmp_path / "o.sqlite3"), tamper=TamperConfig(enabled=tamper, hold=2),
    )
    stored: list[Event] = []
    outbox = Outbox(tmp_path / "o.sqlite3", "cam-gap", "s", 100_000)
    pipeline = Pipeline(
        config, build_detector(config), build_scene(config), outbox, 10.0, on_stored=stored.extend, video=video,  # type: ignore[arg-type]
    )
    return pipeline, stored


@pytest.fixture(scope="module")
def clip(media: Path) -> list:
    cap = cv2.VideoCapture(str(media / "vtest.avi"))
    frames = [cap.read()[1] for _ in range(150)]
    cap.release()
    return frames


def test_a_frame_after_a_gap_ends_every_track_where_it_was_last_seen(tmp_path: Path, clip: list) -> None:
    pipeline, stored = make(tmp_path, Video())
    for i, image in enumerate(clip[:60]):
        pipeline.step(Frame(i, T0 + i * 100, i / 10, image))
    started = {e.data["track_id"] for e in stored if e.type == "track.start"}
    assert len(started) >= 3
    last_ts = T0 + 59 * 100
    # 30 s later the camera is back, showing what it shows 30 s on.
    pipeline.step(Frame(60, T0 + 36_000, 36.0, clip[100], after_gap=True))
    ended = {e.data["track_id"]: e for e in stored if e.type == "track.end"}
    assert set(ended) >= started
    for track in started:
        assert ended[track].ts == last_ts  # where it was last seen, not at the gap's end
        assert ended[track].data["dwell_s"] <= 6.0  # no dwell made up over the 30 s
    before = len(stored)
    for i, image in enumerate(clip[100:140]):
        pipeline.step(Frame(61 + i, T0 + 36_100 + i * 100, 36.1 + i / 10, image))
    # The tracker started over: the people still there are new tracks, none is a continuation.
    new = [e.data["track_id"] for e in stored[before:] if e.type == "track.start"]
    assert new and not set(new) & started


def test_without_frames_the_node_reports_video_state_at_once_and_tracks_time_out(tmp_path: Path, clip: list) -> None:
    video = Video()
    pipeline, stored = make(tmp_path, video)
    for i, image in enumerate(clip[:40]):
        pipeline.step(Frame(i, T0 + i * 100, i / 10, image))
    assert not [e for e in stored if e.type == "health"]  # the interval is 30 s: none yet
    video.state, video.lost = "stalled", 2.1
    pipeline.step(Idle(T0 + 6_000, 6.0))
    health = [e for e in stored if e.type == "health"]
    assert [h.data["video_state"] for h in health] == ["stalled"] and health[0].data["video_lost_s"] == 2.1
    # Time passes without frames: every track ends by its timeout, with the dwell it had.
    ended = {e.data["track_id"] for e in stored if e.type == "track.end"}
    assert ended == {e.data["track_id"] for e in stored if e.type == "track.start"}
    video.state, video.reconnects, video.missed = "down", 1, 12
    pipeline.step(Idle(T0 + 7_000, 7.0))
    pipeline.step(Idle(T0 + 7_250, 7.25))  # no change: no report
    video.state = "ok"
    pipeline.step(Frame(40, T0 + 9_000, 9.0, clip[90], after_gap=True))
    states = [(e.data["video_state"], e.data["video_reconnects"], e.data["frames_missed"]) for e in stored if e.type == "health"]
    assert states == [("stalled", 0, 0), ("down", 1, 12), ("ok", 1, 0)]  # missed since the report before


def test_tamper_verdicts_go_out_in_health_at_once(tmp_path: Path, clip: list) -> None:
    pipeline, stored = make(tmp_path, Video(), tamper=True)
    t = 0.0
    for i in range(0, 150, 10):  # one look a second: 5 to learn, then the view is covered
        image = clip[i] if i < 80 else cv2.rectangle(clip[i].copy(), (0, 0), (500, 576), (40, 40, 40), -1)
        pipeline.step(Frame(i, T0 + int(t * 1000), t, image))
        t += 1.0
    reports = [e.data["tamper"] for e in stored if e.type == "health"]
    assert reports == [["blocked"]]


def test_detection_instants_a_busy_node_let_pass_are_counted(tmp_path: Path, clip: list) -> None:
    pipeline, _ = make(tmp_path, Video())  # detection at 5 fps on a 10 fps stream
    for i in range(10):
        pipeline.step(Frame(i, T0 + i * 100, i / 10, clip[i]))
    assert (pipeline.stats.detect_due, pipeline.stats.detect_missed) == (5, 0)
    # Busy: the frames of 1.0-1.4 s went by untaken. Instants 1.0, 1.2 and 1.4 passed; the frame at 1.5 serves one.
    pipeline.step(Frame(15, T0 + 1_500, 1.5, clip[15]))
    assert (pipeline.stats.detect_due, pipeline.stats.detect_missed) == (6, 2)
    pipeline.step(Frame(16, T0 + 1_600, 1.6, clip[16]))  # the next instant on the schedule: 1.6, not at once
    pipeline.step(Frame(17, T0 + 1_700, 1.7, clip[17]))
    assert (pipeline.stats.detect_due, pipeline.stats.detect_missed) == (7, 2)
