"""The bridge's decision for hostile input, fuzzed: never a crash, always a reason."""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.settings import Settings
from schemas.codec import Reason, decode
from schemas.deadletter import DeadLetter
from streams.bridge import Bridge
from tests.support.hostile import MUTATIONS, NOW, event_strategy, good_event

TOPIC = "fleetsight/cameras/cam-f/events"
REASONS = {r.value for r in Reason}
bridge = Bridge(Settings(kafka_partitions=8))


def letters(outcome):
    return [DeadLetter.from_record(r.value) for r in outcome.records if r.topic == "fleetsight.deadletter"]


def forwarded(outcome):
    return [e for r in outcome.records if r.topic == "fleetsight.events" for e in decode(r.value)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_and_always_get_a_reason(payload: bytes) -> None:
    outcome = bridge.handle(TOPIC, payload, NOW)
    if not forwarded(outcome):
        assert letters(outcome) and all(d.reason in REASONS and d.detail for d in letters(outcome))


valid_events = event_strategy().map(
    lambda e: {**e, "camera_id": "cam-f", "ts": NOW - (e["ts"] % 86_400_000)}  # our camera, a sane clock
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events, min_size=1, max_size=5), st.randoms(use_true_random=False), st.lists(st.integers(0, len(MUTATIONS) - 1), max_size=5))
def test_valid_events_pass_and_each_mutation_is_dead_lettered(events, rng: random.Random, picks) -> None:
    outcome = bridge.handle(TOPIC, json.dumps(events).encode(), NOW)
    assert [e.to_dict() for e in forwarded(outcome)] == [{**e, "seq": int(e["seq"]), "ts": int(e["ts"])} for e in events]
    assert not letters(outcome)
    for pick in picks:
        name, make = MUTATIONS[pick]
        bad = bridge.handle(TOPIC, make(good_event("cam-f", 1), rng), NOW)
        assert not forwarded(bad), name
        assert [d.reason in REASONS for d in letters(bad)] == [True], name


def test_a_batch_with_bad_members_forwards_exactly_the_good_ones() -> None:
    rng = random.Random(4)
    batch, good = [], []
    for seq in range(1, 60):
        if rng.random() < 0.5:
            batch.append(good_event("cam-f", seq))
            good.append(seq)
        else:
            batch.append({**good_event("cam-f", seq), rng.choice(["v", "type", "ts"]): rng.choice([None, "x", 2])})
    outcome = bridge.handle(TOPIC, json.dumps(batch).encode(), NOW)
    assert [e.seq for e in forwarded(outcome)] == good
    assert len(letters(outcome)) == len(batch) - len(good)
    assert sorted(seq for _, seq in outcome.confirms) == list(range(1, 60))  # every seq settled
