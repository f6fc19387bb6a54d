"""The event contract: schema examples, codec round trips, clear rejections."""

from __future__ import annotations

import json

import msgpack
import pytest

from schemas.codec import Event, EventError, Reason, decode, decode_ack, encode, encode_ack, load_schema, validate


def good(**over) -> dict:
    e = {"v": 1, "camera_id": "cam-1", "site": "s1", "seq": 5, "ts": 1764072000123, "type": "track.start",
         "data": {"track_id": 3, "class": "person", "confidence": 0.7}}
    e.update(over)
    return e


@pytest.mark.parametrize("name", ["event", "ack", "deadletter"])
def test_every_schema_has_examples_that_validate(name: str) -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["examples"]
    for example in schema["examples"]:
        Draft202012Validator(schema).validate(example)


def test_event_examples_decode_to_events() -> None:
    for example in load_schema("event")["examples"]:
        event = validate(example)
        assert event.to_dict() == example


def test_json_and_msgpack_round_trip_single_and_batch() -> None:
    events = [validate(good(seq=i)) for i in range(1, 4)]
    for fmt in ("json", "msgpack"):
        assert decode(encode(events[:1], fmt)) == events[:1]
        assert decode(encode(events, fmt)) == events


def test_msgpack_is_smaller_than_json() -> None:
    events = [validate(good(seq=i)) for i in range(1, 51)]
    assert len(encode(events, "msgpack")) < len(encode(events, "json"))


@pytest.mark.parametrize(
    "payload, reason, words",
    [
        (b"", Reason.MALFORMED, "empty"),
        (b"{oops", Reason.MALFORMED, "JSON"),
        (b"\xc1", Reason.MALFORMED, "MessagePack"),
        (b"\x00\xff", Reason.MALFORMED, "JSON"),
        (b"[" * 50_000 + b"]" * 50_000, Reason.MALFORMED, "nesting"),
        (b"[]", Reason.INVALID, "empty batch"),
        (json.dumps([good()] * 1001).encode(), Reason.TOO_LARGE, "batch"),
    ],
)
def test_unreadable_messages_raise_with_a_reason(payload: bytes, reason: Reason, words: str) -> None:
    with pytest.raises(EventError) as info:
        decode(payload)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(EventError) as info:
        decode(b"{" + b" " * 2000 + b"}", max_bytes=1024)
    assert info.value.reason == Reason.TOO_LARGE


@pytest.mark.parametrize(
    "event, reason, words",
    [
        (good(v=2), Reason.UNSUPPORTED_VERSION, "version 2"),
        ({k: v for k, v in good().items() if k != "v"}, Reason.INVALID, "'v'"),
        (good(v=True), Reason.UNSUPPORTED_VERSION, "version"),
        (good(seq=0), Reason.INVALID, "seq"),
        (good(seq=True), Reason.INVALID, "seq"),
        (good(ts=1.5e12 + 0.5), Reason.INVALID, "ts"),
        (good(data={"track_id": 1, "class": "person", "confidence": 1.5}), Reason.INVALID, "confidence"),
        (good(ts=1764072000), Reason.INVALID, "ts"),  # seconds, not milliseconds
        (good(camera_id="a/b"), Reason.INVALID, "camera_id"),
        (good(type="teleport"), Reason.INVALID, "type"),
        (good(data={"track_id": 1}), Reason.INVALID, "class"),
        (good(extra=1), Reason.INVALID, "extra"),
        ("just a string", Reason.INVALID, "object"),
    ],
)
def test_invalid_events_name_the_problem(event, reason: Reason, words: str) -> None:
    [result] = decode(json.dumps(event).encode())
    assert isinstance(result, EventError)
    assert result.reason == reason
    assert words in result.detail


def test_one_bad_event_in_a_batch_leaves_the_others() -> None:
    results = decode(json.dumps([good(seq=1), good(seq=2, type="x"), good(seq=3)]).encode())
    assert [type(r) for r in results] == [Event, EventError, Event]
    assert results[1].claimed("seq") == 2


def test_ack_round_trip_and_rejects_garbage() -> None:
    assert decode_ack(encode_ack("cam-1", 42, ts=1_700_000_000_000)) == ("cam-1", 42, 1_700_000_000_000)
    assert decode_ack(b'{"v": 1, "camera_id": "cam-1", "seq": 7}').ts == 0  # ts is optional
    with pytest.raises(EventError):
        decode_ack(b'{"v": 1, "camera_id": "cam-1", "seq": -1}')
    with pytest.raises(EventError):
        decode_ack(msgpack.packb({"v": 1}))


def test_whole_floats_are_integers_as_json_schema_says() -> None:
    event = validate(good(ts=1.5e12, seq=7.0))
    assert (event.ts, event.seq) == (1500000000000, 7) and type(event.ts) is int


def test_minute_is_the_event_time_minute() -> None:
    assert validate(good(ts=1764072059999)).minute == 1764072000000


def test_decode_validated_agrees_with_decode_and_keeps_the_full_reasons() -> None:
    from schemas.codec import decode_validated

    good = [
        {"v": 1, "camera_id": "c", "site": "s", "seq": 1, "ts": 1_700_000_000_000, "type": "track.start",
         "data": {"track_id": 1, "class": "person", "confidence": 0.9}},
        {"v": 1, "camera_id": "c", "site": "s", "seq": 2, "ts": 1_700_000_000_000, "type": "line.cross",
         "data": {"track_id": 1, "class": "person", "line": "door", "direction": "in"}},
    ]
    bad = [
        {**good[1], "seq": 3, "data": {**good[1]["data"], "direction": "sideways"}},  # fails the quick check
        {**good[0], "seq": 4, "data": {"track_id": 1, "class": 7, "confidence": 0.9}},
        {**good[0], "seq": 5, "v": 9},
    ]
    payload = json.dumps(good + bad).encode()
    fast, full = decode_validated(payload), decode(payload)
    assert [e.to_dict() for e in fast[:2]] == [e.to_dict() for e in full[:2]] and all(isinstance(e, Event) for e in fast[:2])
    assert [(e.reason, e.detail) for e in fast[2:]] == [(e.reason, e.detail) for e in full[2:]]


@pytest.mark.parametrize("change", [
    {"extra": 1},  # a field the envelope does not have
    {"v": None},  # no version
    {"seq": 5.0},  # a float where an int goes
    {"ts": True},
    {"camera_id": None},
])
def test_decode_validated_takes_the_exact_path_for_records_the_fast_decoder_refuses(change: dict) -> None:
    """A JSON record msgspec will not read as typed envelopes decodes as it always did (as MessagePack, which never takes that path, does)."""
    from schemas.codec import decode_validated

    odd = {k: v for k, v in {**good(seq=6), **change}.items() if v is not None}
    fast, exact = decode_validated(json.dumps([good(), odd]).encode()), decode_validated(msgpack.packb([good(), odd]))
    assert fast[0] == exact[0] == validate(good())
    if isinstance(exact[1], EventError):
        assert isinstance(fast[1], EventError) and (fast[1].reason, fast[1].detail) == (exact[1].reason, exact[1].detail)
    else:
        assert fast[1] == exact[1]
