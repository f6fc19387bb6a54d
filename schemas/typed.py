"""The busiest event types of ``v1/event.schema.json`` as msgspec types: a typed decoder for the bridge.

The JSON Schema stays the contract; this is a faster way to say yes to
input that obviously meets it. msgspec (a kept library, 0.18+: JSON
decoding, type and constraint checks in C) reads a message straight into
these structs, about 1.5 us an event against 8-9 us for ``json.loads``
plus the compiled JSON Schema checks (fastjsonschema) on this box; the
schema checks were four fifths of the bridge's work per event (issue 37).

These types accept a subset of what the schema accepts, never more: each
constraint below is the schema's, and where msgspec is stricter (an integer
written 1.0, a field ``null``, a type not listed here, one bad event in a
batch) the whole message takes the exact path in ``schemas.codec``, which
also names the reason of any refusal. ``tests/unit/test_typed.py`` checks
both directions against the schema: every event generated from the schema
of these types is read the same, and nothing the schema refuses gets through.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# $defs of the schema. "\Z", not "$": Python's "$" also matches before a
# final newline, ECMA-262's (JSON Schema's) does not ("a\n" is no ident).
Ident = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,47}\Z")]
TrackId = Annotated[int, Meta(ge=0)]
Confidence = Annotated[float, Meta(ge=0, le=1)]
Seconds = Annotated[float, Meta(ge=0)]
Version = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")]
Seq = Annotated[int, Meta(ge=1, le=9007199254740991)]
Ts = Annotated[int, Meta(ge=946684800000, le=32503680000000)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
UNSET = msgspec.UNSET


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class TrackStartBody(_Body, frozen=True):
    track_id: TrackId
    class_: Name = msgspec.field(name="class")
    confidence: Confidence
    bbox: Annotated[list[Fraction], Meta(min_length=4, max_length=4)] | msgspec.UnsetType = UNSET


class TrackEndBody(_Body, frozen=True):
    track_id: TrackId
    class_: Name = msgspec.field(name="class")
    dwell_s: Seconds
    max_confidence: Confidence
    zones: Annotated[list[Name], Meta(max_length=64)] | msgspec.UnsetType = UNSET


class LineCrossBody(_Body, frozen=True):
    track_id: TrackId
    class_: Name = msgspec.field(name="class")
    line: Name
    direction: Literal["in", "out"]
    geometry: Version | msgspec.UnsetType = UNSET


class ZoneEnterBody(_Body, frozen=True):
    track_id: TrackId
    class_: Name = msgspec.field(name="class")
    zone: Name
    geometry: Version | msgspec.UnsetType = UNSET


class ZoneExitBody(_Body, frozen=True):
    track_id: TrackId
    class_: Name = msgspec.field(name="class")
    zone: Name
    dwell_s: Seconds
    geometry: Version | msgspec.UnsetType = UNSET


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    v: Literal[1]
    camera_id: Ident
    site: Ident
    seq: Seq
    ts: Ts


class TrackStart(_Envelope, frozen=True, tag="track.start"):
    data: TrackStartBody


class TrackEnd(_Envelope, frozen=True, tag="track.end"):
    data: TrackEndBody


class LineCross(_Envelope, frozen=True, tag="line.cross"):
    data: LineCrossBody


class ZoneEnter(_Envelope, frozen=True, tag="zone.enter"):
    data: ZoneEnterBody


class ZoneExit(_Envelope, frozen=True, tag="zone.exit"):
    data: ZoneExitBody


Typed = TrackStart | TrackEnd | LineCross | ZoneEnter | ZoneExit
TYPES: dict[type, str] = {TrackStart: "track.start", TrackEnd: "track.end", LineCross: "line.cross", ZoneEnter: "zone.enter", ZoneExit: "zone.exit"}

DECODER = msgspec.json.Decoder(list[Typed] | Typed)
