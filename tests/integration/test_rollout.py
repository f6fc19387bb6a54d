"""Model rollout through the real broker and PostgreSQL to real camera nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.config import CameraConfig, ModelConfig, ModelUpdateConfig, OutboxConfig, SourceConfig
from edge.model_spec import model_spec
from edge.node import CameraNode
from fleetsight import rollout
from runtime.waiting import WaitTimeout, wait_for
from schemas.rollout import CHUNK_SIZE, ModelReport
from tests.support import Stack, publish

pytestmark = pytest.mark.integration

SHIPPED = model_spec()


def variant(tmp: Path, note: str) -> Path:
    """The shipped network with another doc string: a different file (and sha256) that loads and runs."""
    doc = note.encode()
    path = tmp / f"{note.replace(' ', '-')}.onnx"
    path.write_bytes(SHIPPED.path.read_bytes() + bytes([0x32, len(doc)]) + doc)  # ModelProto.doc_string, last one wins
    return path


def camera(tmp: Path, media: Path, camera_id: str, site: str = "depot") -> CameraConfig:
    return CameraConfig(
        camera_id=camera_id, site=site,
        # Slow, looping video: enough frames for probation, little CPU for three nodes.
        source=SourceConfig(uri=str(media / "vtest.avi"), loop=True, realtime=True, fps=5),
        model=ModelConfig(threads=1, updates=ModelUpdateConfig(store=tmp / f"models-{camera_id}", probation_frames=10)),
        health_interval_s=2, occupancy_interval_s=5,
        outbox=OutboxConfig(path=tmp / f"outbox-{camera_id}.sqlite3"),
        metrics_port=None,
    )


@contextlib.asynccontextmanager
async def running(stack: Stack, config: CameraConfig) -> AsyncIterator[CameraNode]:
    stack.camera_login(config.camera_id)
    node = CameraNode(config, stack.settings)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop, drain_timeout_s=0))
    try:
        yield node
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def reports(stack: Stack) -> dict[str, ModelReport]:
    return await asyncio.to_thread(rollout.read_reports, stack.settings)


async def wait_state(stack: Stack, camera_id: str, version: str, state: str, detail: str = "", timeout: float = 120) -> ModelReport:
    async def check() -> ModelReport | None:
        stack.assert_running()
        report = (await reports(stack)).get(camera_id)
        return report if report and report.version == version and report.state == state and detail in report.detail else None

    try:
        return await wait_for(check, timeout, f"{camera_id}: {version} {state}", interval=0.5)
    except WaitTimeout:
        raise AssertionError(f"{(await reports(stack)).get(camera_id)}\n{stack.log_tail()}") from None


async def test_rollout_to_a_site_reaches_three_cameras_one_of_them_offline(stack: Stack, media: Path, tmp_path: Path) -> None:
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    v2 = await rollout.publish(stack.settings, variant(tmp_path, "depot v2"), "nanodet-g-416@depot2", "nanodet-g-416", "retrained on the depot")
    assert v2.size_bytes > 10 * CHUNK_SIZE  # really in many chunks
    configs = {c: camera(tmp_path, media, c) for c in ("cam-a", "cam-b", "cam-c")}

    async with running(stack, configs["cam-a"]) as a, running(stack, configs["cam-b"]) as b:
        for node in (a, b):
            await wait_for(lambda: node.stats.detector_runs > 5, 60,  # noqa: B023 (awaited in the loop)
                           "frames through the first model")
        desired = await rollout.rollout(stack.settings, v2.version, sites=["depot"], cameras=[])
        for node in (a, b):
            report = await wait_state(stack, node.config.camera_id, v2.version, "active")
            assert report.running_version == v2.version and report.rollout_id == desired.rollout_id
            assert node.switch.detector.spec.sha256 == v2.sha256
        frames_before = {n: n.stats.frames for n in (a, b)}
        await wait_for(lambda: all(n.stats.frames > frames_before[n] + 5 for n in (a, b)), 60, "frames on the new model")

    # cam-c was off during the rollout: the retained site instruction waits for it.
    async with running(stack, configs["cam-c"]) as c:
        assert c.switch.detector.spec.version == SHIPPED.version
        await wait_state(stack, "cam-c", v2.version, "active")

        async def health_says_v2() -> bool:
            rows = await stack.query("SELECT camera_id, model_version FROM camera_status")
            return {r["camera_id"]: r["model_version"] for r in rows} == {c: v2.version for c in configs}

        await wait_for(health_says_v2, 120, "every camera's health reporting the new version in SQL")

    versions, statuses = await rollout.status(stack.settings)
    assert [v.version for v in versions] == [v2.version]
    assert {(s.camera_id, s.site, s.desired, s.running, s.state) for s in statuses} == {
        (c, "depot", v2.version, v2.version, "active") for c in configs
    }
    # A restarted node runs the rolled-out model from the start, without fetching it again.
    restarted = CameraNode(configs["cam-a"], stack.settings)
    assert restarted.switch.detector.spec.version == v2.version
    restarted._uplink_outbox.close()


async def test_corrupted_file_is_refused_and_a_model_that_does_not_load_is_rolled_back(
    stack: Stack, media: Path, tmp_path: Path
) -> None:
    config = camera(tmp_path, media, "cam-x")
    v3_file = variant(tmp_path, "v3")
    v3 = await rollout.publish(stack.settings, v3_file, "nanodet-g-416@depot3", "nanodet-g-416")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(SHIPPED.path.read_bytes()[: 3 * CHUNK_SIZE + 1000])
    with pytest.raises(rollout.RolloutError, match="does not load as a nanodet-g-416: onnxruntime could not load"):
        await rollout.publish(stack.settings, truncated, "nanodet-g-416@broken", "nanodet-g-416")
    broken = await rollout.publish(stack.settings, truncated, "nanodet-g-416@broken", "nanodet-g-416", check=False)
    # A file published as another family than it is: refused before it reaches the registry.
    with pytest.raises(rollout.RolloutError, match=r"is not a yolox model \(yolox-nano-416\).*a yolox model gives one output 1x3549x85"):
        await rollout.publish(stack.settings, v3_file, None, None, family="yolox")

    # The camera is offline while the file is put up, and a chunk of it is damaged on the broker.
    desired = await rollout.rollout(stack.settings, v3.version, sites=[], cameras=["cam-x"])
    chunk = v3_file.read_bytes()[5 * CHUNK_SIZE : 6 * CHUNK_SIZE]
    await asyncio.to_thread(
        publish, stack.settings, [(stack.settings.mqtt_topics.model_chunk(v3.sha256, 5), bytes([chunk[0] ^ 0xFF]) + chunk[1:])], retain=True
    )

    async with running(stack, config) as node:
        report = await wait_state(stack, "cam-x", v3.version, "refused", "chunk 5 of the file is corrupted")
        assert report.rollout_id == desired.rollout_id
        assert report.running_version == SHIPPED.version
        assert not list(config.model.updates.store.glob("*.onnx"))  # nothing half-made is kept

        await rollout.rollout(stack.settings, broken.version, sites=[], cameras=["cam-x"])
        report = await wait_state(stack, "cam-x", broken.version, "failed", "could not load it")
        assert report.running_version == SHIPPED.version
        runs = node.stats.detector_runs
        await wait_for(lambda: node.stats.detector_runs > runs + 5, 60, "frames still detected on the old model")
        assert node.switch.detector.spec.version == SHIPPED.version

    # Restarted, the camera does not try the failed version again (nor crash on it).
    async with running(stack, config) as node:
        await wait_state(stack, "cam-x", broken.version, "failed", "not tried again")
        assert node.switch.detector.spec.version == SHIPPED.version
