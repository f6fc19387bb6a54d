"""Hostile input through the real broker and bridge, with good events in between."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest

from tests.support import SENTINEL, Stack, assert_sql_matches, publish, truth
from tests.support.hostile import MUTATIONS, good_event

pytestmark = pytest.mark.integration


async def test_the_bridge_survives_a_hostile_stream_and_loses_no_good_event(stack: Stack) -> None:
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    rng = random.Random(9)
    cams = ["hostile-a", "hostile-b"]
    now = int(time.time() * 1000)
    items, good, hostile = [], [], Counter()
    seq = {c: 0 for c in cams}
    for i in range(400):
        cam = rng.choice(cams)
        if i % 3:
            seq[cam] += 1
            e = good_event(cam, seq[cam], now - rng.randint(0, 120_000), rng.choice(["person", "car"]))
            good.append(e)
            items.append((topics.events(cam), json.dumps(e).encode()))
        else:
            name, make = MUTATIONS[i // 3 % len(MUTATIONS)]
            hostile[name] += 1
            payload = make(good_event(cam, 10_000 + i, now), rng)
            if name == "far future":  # the fuzz module's clock is fixed; make it far ahead of ours
                payload = json.dumps({**good_event(cam, 10_000 + i, now), "ts": now + 48 * 3600_000}).encode()
            items.append((topics.events(cam), payload))
    for cam in cams:
        seq[cam] += 1
        last = good_event(cam, seq[cam], int(time.time() * 1000), SENTINEL)
        good.append(last)
        items.append((topics.events(cam), json.dumps(last).encode()))
    publish(stack.settings, items)

    expected = truth(good)
    await assert_sql_matches(stack, expected, cams)
    letters = await stack.deadletters(expect=sum(hostile.values()))
    assert len(letters) == sum(hostile.values())
    assert all(d["reason"] and d["detail"] and d["stage"] == "bridge" for d in letters)
    stack.assert_running()
