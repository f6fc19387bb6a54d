"""Model swap and probation on the video thread, and the local model store."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge.capture import Frame
from edge.config import CameraConfig, OutboxConfig, SourceConfig
from edge.detector import Detections
from edge.model_spec import ModelError, model_spec
from edge.model_store import ModelStore
from edge.model_switch import ModelSwitch
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene
from schemas.rollout import DesiredModel, RolloutError, chunk_hashes


class FakeDetector:
    """An ObjectDetector whose timing and failures are what the switch judges (no model runs)."""

    def __init__(self, version: str, fail: bool = False) -> None:
        self.spec = dataclasses.replace(model_spec(), version=version, sha256=hashlib.sha256(version.encode()).hexdigest())
        self.fail = fail
        self.calls = 0

    def __call__(self, image: np.ndarray, clock: object = None) -> Detections:
        self.calls += 1
        if self.fail:
            raise RuntimeError("bad output shape")
        return Detections.empty()

    def class_name(self, class_id: int) -> str:
        return "person"


def desired(version: str = "v2", rollout_id: int = 1, content: bytes = b"x" * 1000, chunk: int = 300) -> DesiredModel:
    return DesiredModel(
        rollout_id=rollout_id, issued_at_ms=0, version=version, name="nanodet-g-416",
        sha256=hashlib.sha256(content).hexdigest(), size=len(content), chunk_size=chunk,
        chunk_sha256=chunk_hashes(content, chunk),
    )


def outcomes_of(switch: ModelSwitch) -> list:
    seen: list = []
    switch.on_outcome = lambda d, kept, why: seen.append((d.version, kept, why))
    return seen


def test_new_model_comes_in_between_frames_and_is_kept_after_probation() -> None:
    old, new = FakeDetector("v1"), FakeDetector("v2")
    switch = ModelSwitch(old, probation_frames=5, max_slowdown=3.0)
    seen = outcomes_of(switch)
    for _ in range(10):
        assert switch.current() is old
        switch.observe(0.010)
    switch.offer(new, desired())
    assert switch.current() is new and switch.on_probation
    for _ in range(4):
        switch.observe(0.012)
    assert seen == [] and switch.on_probation
    assert switch.observe(0.012) is new
    assert not switch.on_probation and seen[0][:2] == ("v2", True)


def test_a_much_slower_model_is_rolled_back_after_probation() -> None:
    old, new = FakeDetector("v1"), FakeDetector("v2")
    switch = ModelSwitch(old, probation_frames=5, max_slowdown=3.0)
    seen = outcomes_of(switch)
    for _ in range(10):
        switch.current()
        switch.observe(0.010)
    switch.offer(new, desired())
    switch.current()
    for _ in range(5):
        kept = switch.observe(0.050)
    assert kept is old and switch.current() is old
    assert seen[0][:2] == ("v2", False) and "limit 3x" in seen[0][2]


def test_a_model_on_probation_is_dropped_when_the_running_one_is_asked_for_again() -> None:
    old, new = FakeDetector("v1"), FakeDetector("v2")
    switch = ModelSwitch(old, probation_frames=50, max_slowdown=3.0)
    seen = outcomes_of(switch)
    switch.offer(new, desired())
    assert switch.current() is new
    switch.cancel("superseded by v1")
    assert switch.current() is old and not switch.on_probation
    assert seen == [("v2", False, "superseded by v1")]


def make_pipeline(tmp_path: Path, switch: ModelSwitch) -> Pipeline:
    config = CameraConfig(camera_id="cam-1", site="s", source=SourceConfig(uri="x.avi"), outbox=OutboxConfig(path=tmp_path / "o.sqlite3"))
    config.gate.enabled = False
    outbox = Outbox(tmp_path / "o.sqlite3", "cam-1", "s", 1000)
    return Pipeline(config, switch.detector, build_scene(config), outbox, 10.0, switch=switch)  # type: ignore[arg-type]


def test_a_model_that_fails_on_a_frame_is_rolled_back_and_the_frame_runs_on_the_old_one(tmp_path: Path) -> None:
    old, broken = FakeDetector("v1"), FakeDetector("v2", fail=True)
    switch = ModelSwitch(old, probation_frames=5, max_slowdown=3.0)  # type: ignore[arg-type]
    seen = outcomes_of(switch)
    pipeline = make_pipeline(tmp_path, switch)
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(3):
        pipeline.step(Frame(i, 1_000 + i * 100, i / 10, image))
    switch.offer(broken, desired())  # type: ignore[arg-type]
    pipeline.step(Frame(3, 1_300, 0.3, image))
    assert broken.calls == 1 and old.calls == 4  # the failed frame was detected again on v1
    assert pipeline.detector is old and pipeline.stats.detector_runs == 4
    assert seen[0][:2] == ("v2", False) and "inference failed: bad output shape" in seen[0][2]


def test_store_resumes_from_the_chunks_it_has_and_refuses_a_wrong_file(tmp_path: Path) -> None:
    content = bytes(range(256)) * 5
    d = desired(content=content)
    store = ModelStore(tmp_path / "models")
    assert store.missing(d) == [0, 1, 2, 3, 4]
    for i in (0, 2):
        store.write_chunk(d, i, content[i * 300 : (i + 1) * 300])
    (tmp_path / "models" / f"{d.sha256}.parts" / "2").write_bytes(b"torn write")  # a chunk cut short by a crash
    assert store.missing(d) == [1, 2, 3, 4]
    for i in (1, 2, 3, 4):
        store.write_chunk(d, i, content[i * 300 : (i + 1) * 300])
    assert store.assemble(d).read_bytes() == content

    lying = d.model_copy(update={"sha256": "0" * 64})
    for i in range(5):
        store.write_chunk(lying, i, content[i * 300 : (i + 1) * 300])
    with pytest.raises(ModelError, match="refusing to load"):
        store.assemble(lying)
    assert not store.file(lying.sha256).exists()


def test_store_remembers_a_failure_per_rollout(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.record_failure(desired(rollout_id=3), "could not load it")
    assert store.failure(desired(rollout_id=3)) == "could not load it"
    assert store.failure(desired(rollout_id=4)) is None  # a new rollout of the same file tries again


def test_instruction_messages_are_validated() -> None:
    good = desired()
    assert DesiredModel.from_json(good.to_json()) == good
    for bad in (b"", b"{", b'{"version": "v2"}', good.to_json().replace(b'"sha256":"', b'"sha256":"zz')):
        with pytest.raises(RolloutError):
            DesiredModel.from_json(bad)
