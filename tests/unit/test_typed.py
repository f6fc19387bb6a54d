"""The bridge's typed decoder (``schemas.typed``) says yes only where the JSON Schema does, and reads those events the same."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import typed
from schemas.codec import EventError, _typed, validate
from tests.support.hostile import event_strategy, good_event

TYPES = tuple(typed.TYPES.values())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=10,
)


def schema_says(obj: Any) -> bool:
    try:
        validate(obj)
    except EventError:
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy(TYPES), min_size=1, max_size=4))
def test_every_event_the_schema_makes_of_these_types_is_read_as_the_exact_path_reads_it(events: list[dict]) -> None:
    fast = _typed(json.dumps(events).encode())
    if fast is None:  # allowed: msgspec is stricter in places (an integer written as 1.0): the exact path decides
        return
    assert fast == [validate(e) for e in events]


PLACES = ["v", "camera_id", "site", "seq", "ts", "type", "data", "data.track_id", "data.class", "data.confidence",
          "data.bbox", "data.dwell_s", "data.line", "data.direction", "data.zone", "data.geometry", "data.zones", "data.extra"]


def _with(event: dict, place: str, value: Any) -> dict:
    out = json.loads(json.dumps(event))
    *path, last = place.split(".")
    target = out
    for key in path:
        target = target[key]
    target[last] = value
    return out


BODIES = {
    "track.start": {"track_id": 1, "class": "person", "confidence": 0.5},
    "track.end": {"track_id": 1, "class": "person", "dwell_s": 2.0, "max_confidence": 0.5},
    "line.cross": {"track_id": 1, "class": "person", "line": "door", "direction": "in"},
    "zone.enter": {"track_id": 1, "class": "person", "zone": "till"},
    "zone.exit": {"track_id": 1, "class": "person", "zone": "till", "dwell_s": 3.0},
}
EDGES = [
    None, True, False, [], {}, "", "x" * 48, "x" * 64, "x" * 65, "a b", " a", "a\n", "in", "out", "IN", "0123456789abcdef",
    "0123456789abcdeF", "0123456789abcde", "track.start", "person", -1, -0.5, 0, 0.0, 1, 1.0, 1.5, 2, 1e300, -1e300,
    2**53 - 1, 2**53, 2**64, 946684799999, 946684800000, 32503680000000, 32503680000001,
    [0, 0, 1, 1], [0, 0, 1, 1.5], [0, 0, 1], [0, 0, 1, 1, 1], ["a"] * 64, ["a"] * 65, ["a", " b"],
]


def _pass_only_where_the_schema_does(type_: str, place: str, value: Any) -> None:
    event = _with({**good_event("cam-t", 1), "type": type_, "data": BODIES[type_]}, place, value)
    fast = _typed(json.dumps(event).encode())
    if fast is not None:
        assert schema_says(event), (type_, place, value)
        assert fast == [validate(event)]


def test_nothing_the_schema_refuses_gets_through_at_every_field_and_bound() -> None:
    passed = 0
    for type_ in TYPES:
        for place in PLACES:
            for value in EDGES:
                _pass_only_where_the_schema_does(type_, place, value)
                passed += _typed(json.dumps(_with({**good_event("cam-t", 1), "type": type_, "data": BODIES[type_]}, place, value)).encode()) is not None
    assert passed > 100  # the typed path does say yes to the valid ones among them


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TYPES), st.sampled_from(PLACES), JSON)
def test_nothing_the_schema_refuses_gets_through(type_: str, place: str, value: Any) -> None:
    _pass_only_where_the_schema_does(type_, place, value)
