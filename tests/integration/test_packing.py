"""A backlog queued for the bridge goes to Kafka packed per camera, and lands in SQL exactly (real Mosquitto, Kafka, PostgreSQL)."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from schemas.codec import decode
from tests.support import CLASSES, Stack, assert_sql_matches, event, publish, truth, with_sentinel

pytestmark = pytest.mark.integration


async def test_a_backlog_queued_while_no_bridge_ran_goes_packed_and_lands_exactly(stack: Stack) -> None:
    stack.start("bridge")
    await stack.wait_bridge_online()  # its sessions exist: the broker queues for them from now on
    stack.kill("bridge", signal.SIGTERM)
    for component in ("worker", "sink"):
        stack.start(component)
    topics = stack.settings.mqtt_topics
    rng = random.Random(38)
    now = int(time.time() * 1000)
    cameras = ["pack-a", "pack-b", "pack-c"]
    per_camera = {c: [event(c, seq, now - rng.randint(0, 300_000), rng.choice(CLASSES)) for seq in range(1, 401)] for c in cameras}
    messages: list[tuple[str, bytes]] = []
    sent: list[dict] = []
    for i in range(0, 400, 20):  # the cameras' batches interleaved, as their outboxes resend them
        for camera in cameras:
            batch = per_camera[camera][i:i + 20]
            messages.append((topics.events(camera), json.dumps(batch).encode()))
            sent += batch
    resend = per_camera["pack-a"][100:150]  # a resend of what went before
    messages.append((topics.events("pack-a"), json.dumps(resend).encode()))
    sent += resend
    for camera in cameras:
        messages.append((topics.events(camera), json.dumps(with_sentinel(camera, 401, sent)).encode()))
    publish(stack.settings, messages)

    stack.start("bridge")
    await assert_sql_matches(stack, truth(sent), cameras)

    records = await stack.records()
    assert len(records) < len(messages) / 3, f"{len(records)} records for {len(messages)} messages: not packed"
    for value in records:
        events = decode(value)
        assert len({e.camera_id for e in events}) == 1  # a record is still one camera's events
    for camera in cameras:  # in the order they came
        seqs = [e.seq for value in records for e in decode(value) if e.camera_id == camera]
        assert seqs == [e["seq"] for e in sent if e["camera_id"] == camera]
