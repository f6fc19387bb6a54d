"""The bridge's decisions for one message (no I/O)."""

from __future__ import annotations

import json

import msgpack

from runtime.settings import Settings
from schemas.codec import decode, encode_ack
from schemas.deadletter import DeadLetter
from streams.bridge import Bridge
from streams.partitioning import partition_for

NOW = 1764072000000


def ev(camera: str, seq: int, ts: int = NOW) -> dict:
    return {"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": "track.start",
            "data": {"track_id": seq, "class": "person", "confidence": 0.5}}


def bridge() -> Bridge:
    return Bridge(Settings(kafka_partitions=8))


def test_good_batch_goes_to_the_camera_partition() -> None:
    b = bridge()
    out = b.handle("fleetsight/cameras/cam-1/events", json.dumps([ev("cam-1", 1), ev("cam-1", 2)]).encode(), NOW)
    # One record for the message's events, in the camera's partition.
    [record] = out.records
    assert (record.topic, record.key, record.partition) == ("fleetsight.events", b"cam-1", partition_for("cam-1", 8))
    assert [e.seq for e in decode(record.value)] == [1, 2]
    assert out.confirms == [("cam-1", 1), ("cam-1", 2)]


def test_a_message_whose_every_event_passed_goes_on_as_it_came_else_only_its_good_events() -> None:
    b = bridge()
    whole = json.dumps([ev("cam-1", 1), ev("cam-1", 2)], indent=1).encode()
    [record] = b.handle("fleetsight/cameras/cam-1/events", whole, NOW).records
    assert record.value == whole
    mixed = json.dumps([ev("cam-1", 3), ev("cam-2", 4)]).encode()
    out = b.handle("fleetsight/cameras/cam-1/events", mixed, NOW)
    [events] = [r for r in out.records if r.topic == "fleetsight.events"]
    assert [e.seq for e in decode(events.value)] == [3]
    packed = msgpack.packb([ev("cam-1", 5)])
    [record] = b.handle("fleetsight/cameras/cam-1/events", packed, NOW).records
    assert record.value.startswith(b"{") and [e.seq for e in decode(record.value)] == [5]  # JSON on the events topic


def test_rejections_are_dead_lettered_and_still_settle_their_seq() -> None:
    b = bridge()
    payload = json.dumps([ev("cam-2", 7), ev("cam-1", 8, ts=NOW + 3600_000)]).encode()
    out = b.handle("fleetsight/cameras/cam-1/events", payload, NOW)
    letters = [DeadLetter.from_record(r.value) for r in out.records]
    assert [(d.reason, d.camera_id, d.seq) for d in letters] == [("camera_mismatch", "cam-1", 7), ("clock_skew", "cam-1", 8)]
    assert all(r.topic == "fleetsight.deadletter" for r in out.records)
    assert out.confirms == [("cam-1", 7), ("cam-1", 8)]
    assert out.forwarded == 0 and out.rejected == 2


def test_outbox_head_and_acks_become_floors() -> None:
    b = bridge()
    out = b.handle("fleetsight/cameras/cam-1/outbox", encode_ack("cam-1", 10), NOW)
    assert out.floors == [("cam-1", 9)] and not out.records
    out = b.handle("fleetsight/cameras/cam-1/ack", encode_ack("cam-1", 30), NOW)
    assert out.floors == [("cam-1", 30)]
    # A head that names another camera than its topic is ignored.
    assert b.handle("fleetsight/cameras/cam-1/outbox", encode_ack("cam-9", 10), NOW).floors == []


def test_unparseable_message_has_no_seq_to_settle() -> None:
    out = bridge().handle("fleetsight/cameras/cam-1/events", b"\xff\xfe", NOW)
    assert [DeadLetter.from_record(r.value).reason for r in out.records] == ["malformed"]
    assert out.confirms == []


def test_a_camera_on_its_shard_is_forwarded_as_in_the_legacy_layout() -> None:
    b = bridge()
    payload = json.dumps([ev("cam-1", 1)]).encode()
    sharded = b.handle(b.mqtt_topics.events("cam-1"), payload, NOW)
    legacy = b.handle(b.mqtt_topics.legacy_events("cam-1"), payload, NOW)
    assert sharded.records == legacy.records and sharded.confirms == [("cam-1", 1)]


def test_a_camera_on_another_shard_is_dead_lettered() -> None:
    from schemas.topics import SHARDS, shard_of

    b = bridge()
    wrong = (shard_of("cam-1") + 1) % SHARDS
    out = b.handle(f"fleetsight/shards/{wrong}/cameras/cam-1/events", json.dumps([ev("cam-1", 1)]).encode(), NOW)
    [record] = out.records
    assert record.topic == "fleetsight.deadletter" and out.reasons == ["bad_topic"]
    # Not confirmed: the edge keeps it until it sends it where it belongs.
    assert out.confirms == []
    assert b.handle(f"fleetsight/shards/{wrong}/cameras/cam-1/outbox", encode_ack("cam-1", 10), NOW).floors == []
