"""No pixels leave a camera node unless the operator turns snapshots on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import CameraConfig, OutboxConfig, SnapshotConfig, SourceConfig
from edge.node import CameraNode
from schemas.codec import decode, decode_ack
from schemas.rollout import ModelReport
from tests.support import MqttWatcher, Stack

pytestmark = pytest.mark.integration

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"\x00\x00\x00\x0cjP")


async def run_node(stack: Stack, media: Path, tmp: Path, camera: str, snapshots: bool) -> list:
    config = CameraConfig(
        camera_id=camera, site="privacy",
        source=SourceConfig(uri=str(media / "vtest.avi"), realtime=False),
        outbox=OutboxConfig(path=tmp / f"{camera}.sqlite3"),
        health_interval_s=2, occupancy_interval_s=2,
        snapshots=SnapshotConfig(enabled=snapshots, every_s=2),
    )
    stack.camera_login(camera)
    sniffer = MqttWatcher(stack.settings, f"{stack.settings.mqtt_topics.root}/#")  # its shard's topics and its own
    try:
        node = CameraNode(config, stack.settings, max_frames=80)
        assert await asyncio.wait_for(node.run(asyncio.Event(), drain_timeout_s=60), 180)
        return [m for m in list(sniffer.messages)
                if f"/cameras/{camera}/" in m.topic and not m.topic.endswith("/ack")]  # acks come from the cloud
    finally:
        sniffer.close()


async def test_without_snapshots_only_schema_events_leave_the_node(stack: Stack, media: Path, tmp_path: Path) -> None:
    stack.start("bridge")
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    sent = await run_node(stack, media, tmp_path, "priv-off", snapshots=False)
    assert any(m.topic == topics.events("priv-off") for m in sent)
    for message in sent:
        assert not any(magic in message.payload for magic in IMAGE_MAGIC), message.topic
        if message.topic == topics.events("priv-off"):
            results = decode(message.payload)
            assert results and all(not isinstance(r, Exception) for r in results)
            assert all(len(json.dumps(r.data)) < 2048 for r in results)
        elif message.topic == topics.model_report("priv-off"):
            report = ModelReport.from_json(message.payload)  # which model it runs: names and hashes only
            assert report.camera_id == "priv-off" and len(message.payload) < 2048
        else:
            assert message.topic == topics.outbox("priv-off")
            decode_ack(message.payload)

    shots = await run_node(stack, media, tmp_path, "priv-on", snapshots=True)
    pictures = [m.payload for m in shots if m.topic == topics.snapshot("priv-on")]
    assert pictures, "snapshots were turned on but none was sent"
    image = cv2.imdecode(np.frombuffer(pictures[0], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 320
