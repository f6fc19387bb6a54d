"""The MQTT topic layout: shards, the legacy layout, and what a bridge lane subscribes to."""

from __future__ import annotations

import zlib

import paho.mqtt.client as mqtt

from schemas.topics import SHARDS, MqttTopics, shard_of

TOPICS = MqttTopics("fleetsight")


def test_shards_are_stable_and_spread() -> None:
    cameras = [f"cam-{i}" for i in range(1000)]
    shards = [shard_of(c) for c in cameras]
    assert shard_of("cam-1") == zlib.crc32(b"cam-1") % 16 == 0  # CRC-32: the same on every edge and bridge, forever
    assert set(shards) == set(range(SHARDS))
    assert max(shards.count(k) for k in range(SHARDS)) < 2 * 1000 / SHARDS


def test_each_lane_subscribes_to_exactly_its_cameras() -> None:
    for camera in ("cam-1", "dock-7", "a.b_c"):
        mine = shard_of(camera)
        for lane in [*range(SHARDS), None]:
            filters = TOPICS.lane_filters(lane)
            uplink = [TOPICS.events(camera), TOPICS.outbox(camera), TOPICS.ack(camera)]
            legacy = [TOPICS.legacy_events(camera), TOPICS.legacy_ack(camera)]
            for topic in uplink:
                assert any(mqtt.topic_matches_sub(f, topic) for f in filters) == (lane == mine), (lane, topic)
            for topic in legacy:
                assert any(mqtt.topic_matches_sub(f, topic) for f in filters) == (lane is None), (lane, topic)


def test_parse_reads_both_layouts() -> None:
    assert TOPICS.parse(TOPICS.events("cam-1")) == ("cam-1", "events", shard_of("cam-1"))
    assert TOPICS.parse(TOPICS.legacy_events("cam-1")) == ("cam-1", "events", None)
    assert TOPICS.parse("fleetsight/shards/x/cameras/cam-1/events") is None
    assert TOPICS.parse("other/cameras/cam-1/events") is None
