"""Encode, decode and validate FleetSight events; every stage uses this.

The JSON Schema files under ``schemas/v1/`` are the source of truth. On the
MQTT wire a message holds one event object or an array of them (a batch),
either as JSON (so any MQTT tool can publish) or as MessagePack (the same
structure, smaller). A Kafka record of the events topic holds the valid
events of one MQTT message as compact JSON, the same encoding: per-record
costs, not per-event ones, bound a stream processor, so records stay batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Literal, NamedTuple

import fastjsonschema
import msgpack
import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from schemas import typed

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_BATCH = 1000
MINUTE_MS = 60_000

WireFormat = Literal["json", "msgpack"]


class Reason(StrEnum):
    """Why input was rejected; the ``reason`` of a dead-letter record."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID = "invalid"
    CAMERA_MISMATCH = "camera_mismatch"
    CLOCK_SKEW = "clock_skew"
    BAD_TOPIC = "bad_topic"
    LATE = "late"


class EventError(ValueError):
    """Input that is not a valid event, with a machine-readable reason."""

    def __init__(self, reason: Reason, detail: str, raw: Any = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw

    def claimed(self, name: str) -> Any:
        """A field the bad input claims (camera_id, seq, ts), if it has one."""
        return self.raw.get(name) if isinstance(self.raw, dict) else None


class Event(msgspec.Struct, frozen=True, gc=False):
    """One validated event.

    A msgspec Struct rather than a dataclass: the stream worker makes one
    per event, and a frozen dataclass's constructor cost 0.7 us of the
    0.8 us it took to decode and build one (msgspec 0.22, Python 3.11).
    ``gc=False``: an event refers to no object that refers back to it, so the
    cycle collector need not track it; tracked, the 50,000 events of a
    worker's batch made decoding one cost twice as much (issue 37).
    """

    camera_id: str
    site: str
    seq: int
    ts: int
    type: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    v: int = SCHEMA_VERSION

    @property
    def minute(self) -> int:
        """Start of the event-time minute, ms since epoch."""
        return self.ts - self.ts % MINUTE_MS

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "camera_id": self.camera_id,
            "site": self.site,
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "data": self.data,
        }


@cache
def load_schema(name: str = "event", version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema document ``schemas/v{version}/{name}.schema.json``."""
    text = resources.files("schemas").joinpath(f"v{version}/{name}.schema.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _validator(name: str = "event", version: int = SCHEMA_VERSION) -> Draft202012Validator:
    schema = load_schema(name, version)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def _fast_checks(name: str, version: int) -> tuple[Callable[[Any], Any], dict[str, Callable[[Any], Any]]]:
    """Compiled validators: the envelope, and each type's body on its own.

    Compiled to Python code and split by ``type`` (from the schema's own
    if/then pairs), so a valid event is checked against just its body
    schema: about 30x faster than jsonschema, which explains invalid ones.
    """
    schema = load_schema(name, version)
    branches = schema.get("allOf", [])
    envelope = fastjsonschema.compile({k: v for k, v in schema.items() if k != "allOf"})
    bodies = {}
    for branch in branches:
        type_name = branch["if"]["properties"]["type"]["const"]
        body = branch["then"]["properties"]["data"]
        bodies[type_name] = fastjsonschema.compile({"$defs": schema["$defs"], **body})
    return envelope, bodies


def _conforms(obj: Any, name: str, version: int) -> bool:
    envelope, bodies = _fast_checks(name, version)
    try:
        envelope(obj)
        check = bodies.get(obj.get("type"))
        if check is not None:
            check(obj["data"])
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _explain(validator: Draft202012Validator, obj: Any) -> str:
    error = best_match(validator.iter_errors(obj))
    if error is None:
        return "does not match the schema"
    where = "/".join(str(p) for p in error.absolute_path) or "event"
    return f"{where}: {error.message}"


def validate(obj: Any) -> Event:
    """Check one decoded event object against the schema of its version."""
    if not isinstance(obj, dict):
        raise EventError(Reason.INVALID, f"an event must be an object, got {type(obj).__name__}", obj)
    version = obj.get("v")
    if version is None:
        raise EventError(Reason.INVALID, "missing schema version 'v'", obj)
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise EventError(Reason.UNSUPPORTED_VERSION, f"schema version {version!r} is not supported (supported: {supported})", obj)
    if not _conforms(obj, "event", version):
        raise EventError(Reason.INVALID, _explain(_validator("event", version), obj), obj)
    return Event(
        camera_id=obj["camera_id"],
        site=obj["site"],
        # JSON Schema counts 1.5e12 as an integer; keep it one in Python too.
        seq=int(obj["seq"]),
        ts=int(obj["ts"]),
        type=obj["type"],
        data=obj["data"],
        v=version,
    )


def is_json(payload: bytes) -> bool:
    """Whether a wire message is JSON (else MessagePack): JSON text starts with an ASCII byte, a MessagePack map or array never does."""
    return payload.lstrip()[:1] < b"\x80"


def _items(decoder: msgspec.json.Decoder[Any], payload: bytes) -> list[Any] | None:
    """The events ``decoder`` reads from a JSON object or array, as a list; None where it refuses them or there are none."""
    if payload[:1] not in (b"[", b"{"):
        return None
    try:
        wire = decoder.decode(payload)
    except msgspec.DecodeError:  # ValidationError too
        return None
    items = wire if isinstance(wire, list) else [wire]
    return items or None


def _parse(payload: bytes) -> Any:
    json_ = is_json(payload)
    try:
        if json_:
            return json.loads(payload)
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except RecursionError:
        raise EventError(Reason.MALFORMED, "nesting too deep") from None
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        kind = "JSON" if json_ else "MessagePack"
        raise EventError(Reason.MALFORMED, f"not valid {kind}: {exc}"[:300]) from None


def _typed(payload: bytes) -> list[Event | EventError] | None:
    """The events of a JSON message that ``schemas.typed`` reads whole (None: take the exact path)."""
    items = _items(typed.DECODER, payload)
    if items is None or len(items) > MAX_BATCH:
        return None
    to_builtins, types = msgspec.to_builtins, typed.TYPES
    return [Event(w.camera_id, w.site, w.seq, w.ts, types[type(w)], to_builtins(w.data), 1) for w in items]


def decode(payload: bytes, max_bytes: int | None = None) -> list[Event | EventError]:
    """Decode one wire message into events, one result per event.

    A message that cannot be read at all raises :class:`EventError`; within
    a readable batch each bad event is returned as an ``EventError`` in its
    place, so one bad event does not cost its neighbours.
    """
    if max_bytes is not None and len(payload) > max_bytes:
        raise EventError(Reason.TOO_LARGE, f"{len(payload)} bytes is over the limit of {max_bytes}")
    if not payload.strip():
        raise EventError(Reason.MALFORMED, "empty payload")
    if (fast := _typed(payload)) is not None:
        return fast
    obj = _parse(payload)
    items = obj if isinstance(obj, list) else [obj]
    if len(items) > MAX_BATCH:
        raise EventError(Reason.TOO_LARGE, f"batch of {len(items)} events is over the limit of {MAX_BATCH}")
    if not items:
        raise EventError(Reason.INVALID, "empty batch")
    results: list[Event | EventError] = []
    for item in items:
        try:
            results.append(validate(item))
        except EventError as exc:
            results.append(exc)
    return results


# What the stream aggregation reads of the busiest event types, and its type.
_FOLDED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "track.start": (("class", str),),
    "track.end": (("class", str), ("dwell_s", (int, float))),
    "line.cross": (("class", str), ("line", str), ("direction", str)),
    "zone.enter": (("class", str), ("zone", str)),
    "zone.exit": (("class", str), ("zone", str), ("dwell_s", (int, float))),
}


def _body_checked(type_: str, data: dict[str, Any]) -> bool:
    """Whether ``data`` of an event of ``type_`` has what the aggregation reads, with the right types."""
    fields = _FOLDED.get(type_)
    if fields is None:
        return False
    for name, kind in fields:
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return False
    if "geometry" in data and type(data["geometry"]) is not str:
        return False
    return type_ != "line.cross" or data["direction"] in ("in", "out")


def _checked_already(obj: Any) -> Event | None:
    """An Event if ``obj`` has what the aggregation reads, with the right types; else None."""
    if type(obj) is not dict or obj.get("v") != 1:
        return None
    data, seq, ts = obj.get("data"), obj.get("seq"), obj.get("ts")
    if type(data) is not dict or type(seq) is not int or type(ts) is not int:
        return None
    if type(obj.get("camera_id")) is not str or type(obj.get("site")) is not str or type(obj.get("type")) is not str:
        return None
    if not _body_checked(obj["type"], data):
        return None
    return Event(camera_id=obj["camera_id"], site=obj["site"], seq=seq, ts=ts, type=obj["type"], data=data, v=1)


class _Wire(Event, frozen=True, forbid_unknown_fields=True):
    """An event as the events topic holds it: every field required (none defaulted), nothing else allowed.

    An :class:`Event` itself, so a record's events are used as msgspec
    builds them (making a second object per event was 0.3 us of it).
    """

    data: dict[str, Any]
    v: int


# msgspec (a kept library: JSON decoding and type checks in C) reads a
# record straight into typed envelopes: about 0.36 us an event against
# 1.2 us for json.loads alone, here. A record it refuses (a wrong type,
# an unknown field, a float for an int) takes the exact path below.
_WIRE = msgspec.json.Decoder(list[_Wire] | _Wire)


def read_wire(payload: bytes) -> list[Event] | None:
    """A record's events as msgspec reads them (envelope types checked, bodies not); None: take :func:`decode_validated`.

    Each event still needs :func:`checked`, unless the caller knows its body
    meets the check already (the worker: an event whose folds match those
    of one checked before, ``streams.aggregate``).
    """
    return _items(_WIRE, payload)


def checked(w: Event) -> Event | EventError:
    """An event of :func:`read_wire` once its body has what the aggregation reads (the quick check), or fully validated."""
    if w.v == 1 and _body_checked(w.type, w.data):
        return w
    try:
        return validate(msgspec.structs.asdict(w))
    except EventError as exc:
        return exc


def decode_validated(payload: bytes) -> list[Event | EventError]:
    """:func:`decode` for records of the events topic, which the bridge validated on the way in.

    Checking every event against the schema again took about half of the
    stream worker's time per event. Here an event of the busiest types is
    only checked for what the aggregation reads (present, right type);
    any other event, and one that fails that check, gets the full
    validation and its exact reason.
    """
    wire = read_wire(payload)
    if wire is not None:
        return [checked(w) for w in wire]
    obj = _parse(payload)
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise EventError(Reason.INVALID, "empty batch")
    results: list[Event | EventError] = []
    for item in items:
        event = _checked_already(item)
        if event is None:
            try:
                event = validate(item)
            except EventError as exc:
                results.append(exc)
                continue
        results.append(event)
    return results


def encode(events: Iterable[Event | dict[str, Any]], fmt: WireFormat = "json") -> bytes:
    """Encode events for the wire: one object for one event, else an array."""
    items = [e.to_dict() if isinstance(e, Event) else e for e in events]
    obj: Any = items[0] if len(items) == 1 else items
    if fmt == "msgpack":
        return bytes(msgpack.packb(obj, use_bin_type=True))
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_ack(camera_id: str, seq: int, ts: int | None = None) -> bytes:
    """Watermark (bridge -> edge) or outbox head (edge -> bridge) message."""
    ts = int(time.time() * 1000) if ts is None else ts
    return json.dumps({"v": 1, "camera_id": camera_id, "seq": seq, "ts": ts}, separators=(",", ":")).encode()


class Ack(NamedTuple):
    camera_id: str
    seq: int
    ts: int  # when the sender wrote it, ms (the bridge's clock on an ack watermark)


def decode_ack(payload: bytes) -> Ack:
    """The camera, seq and send time of an ack or outbox message."""
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise EventError(Reason.MALFORMED, f"not JSON: {exc}") from None
    if not _conforms(obj, "ack", 1):
        raise EventError(Reason.INVALID, _explain(_validator("ack", 1), obj), obj)
    return Ack(obj["camera_id"], obj["seq"], obj.get("ts", 0))
