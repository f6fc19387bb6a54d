"""End to end on the real Mosquitto, Kafka and PostgreSQL: edge -> SQL, exactly."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections import Counter

import msgpack
import pytest

from runtime.waiting import wait_for
from schemas.codec import MINUTE_MS, encode_ack
from tests.support import CLASSES, MqttWatcher, Stack, assert_sql_matches, event, publish, truth, with_sentinel

pytestmark = pytest.mark.integration

async def test_exact_counts_with_duplicates_and_resends(running_stack: Stack) -> None:
    stack = running_stack
    topics = stack.settings.mqtt_topics
    rng = random.Random(1)
    now = int(time.time() * 1000)
    cameras = ["dup-a", "dup-b", "dup-c"]
    sent: list[dict] = []
    watcher = MqttWatcher(stack.settings, topics.all_acks())
    try:
        for cam in cameras:
            # As an edge does on connect: my oldest held event is seq 1.
            items = [(topics.outbox(cam), encode_ack(cam, 1))]
            events = [event(cam, seq, now - rng.randint(0, 240_000), rng.choice(CLASSES)) for seq in range(1, 301)]
            pack = (lambda b: msgpack.packb(b)) if cam == "dup-c" else (lambda b: json.dumps(b).encode())
            for i in range(0, len(events), 25):
                items.append((topics.events(cam), pack(events[i : i + 25])))
            # A resend after a lost link: seqs 100..180 again, then stray copies.
            items.append((topics.events(cam), pack(events[99:180])))
            for e in rng.sample(events, 20):
                items.append((topics.events(cam), pack(e)))
            sent.extend(events + events[99:180])
            items.append((topics.events(cam), pack(with_sentinel(cam, 301, sent))))
            publish(stack.settings, items)
        await assert_sql_matches(stack, truth(sent), cameras)

        def watermark(cam: str) -> int:
            payload = watcher.latest(topics.ack(cam))
            return json.loads(payload)["seq"] if payload else 0

        # Every camera is confirmed up to its last seq.
        await wait_for(lambda: all(watermark(c) == 301 for c in cameras), 30, "ack watermarks at 301")
    finally:
        watcher.close()


async def test_bad_input_goes_to_dead_letter_and_good_events_arrive(running_stack: Stack) -> None:
    stack = running_stack
    topics = stack.settings.mqtt_topics
    cam = "dlq-a"
    now = int(time.time() * 1000)
    topic = topics.events(cam)
    good = [event(cam, seq, now) for seq in range(1, 41)]
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "malformed"),
        (bytes(range(256)), "malformed"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed"),
        (json.dumps({**event(cam, 100, now), "v": 2}).encode(), "unsupported_version"),
        (json.dumps(event("dlq-other", 101, now)).encode(), "camera_mismatch"),
        (json.dumps(event(cam, 102, now + 24 * 3600 * 1000)).encode(), "clock_skew"),
        (json.dumps({**event(cam, 103, now), "data": {"track_id": 1}}).encode(), "invalid"),
        (b'{"pad": "' + b"x" * (300 * 1024) + b'"}', "too_large"),
    ]
    items = []
    for i, e in enumerate(good):
        items.append((topic, json.dumps(e).encode()))
        if i < len(bad):
            items.append((topic, bad[i][0]))
    # One batch with a bad event in the middle: its neighbours still count.
    mixed = [event(cam, 41, now), {**event(cam, 42, now), "type": "teleport"}, event(cam, 43, now)]
    items.append((topic, json.dumps(mixed).encode()))
    good += [mixed[0], mixed[2]]
    items.append((topic, json.dumps(with_sentinel(cam, 44, good)).encode()))
    publish(stack.settings, items)

    await assert_sql_matches(stack, truth(good), [cam])
    letters = [d for d in await stack.deadletters(expect=len(bad) + 1) if d.get("camera_id") == cam]
    reasons = Counter(d["reason"] for d in letters)
    assert reasons == Counter([r for _, r in bad] + ["invalid"])
    assert all(d["detail"] and d["stage"] == "bridge" and d["source_topic"] == topic for d in letters)
    too_large = next(d for d in letters if d["reason"] == "too_large")
    assert too_large["payload_size"] > 300 * 1024 and len(too_large["payload"]) <= 4096
    teleport = next(d for d in letters if d["seq"] == 42)
    assert "type" in teleport["detail"]
    stack.assert_running()


async def test_events_an_hour_old_land_in_their_own_minute(running_stack: Stack) -> None:
    stack = running_stack
    topics = stack.settings.mqtt_topics
    cam = "late-a"
    now = int(time.time() * 1000)
    events = [
        event(cam, 1, now - 3600_000),
        event(cam, 2, now - 3600_000 + 61_000),
        event(cam, 3, now - 2 * 3600_000, cls="car"),
        event(cam, 4, now),
    ]
    with_sentinel(cam, 5, events)
    publish(stack.settings, [(topics.events(cam), json.dumps(e).encode()) for e in events])
    await assert_sql_matches(stack, truth(events), [cam])
    rows = await stack.query(
        "SELECT minute, objects FROM camera_minute_counts WHERE camera_id = $1 AND object_class = 'person' ORDER BY minute",
        cam,
    )
    minutes = [int(r["minute"].timestamp() * 1000) for r in rows]
    assert minutes == sorted({e["ts"] - e["ts"] % MINUTE_MS for e in events[:2] + events[3:4]})
    assert all(r["objects"] == 1 for r in rows)


async def test_mosquitto_pub_event_shows_up_in_sql(running_stack: Stack) -> None:
    stack = running_stack
    mosquitto_pub = shutil.which("mosquitto_pub")
    assert mosquitto_pub, "mosquitto_pub is installed by `make deps`"
    cam = "cli-cam"
    user, password = stack.camera_login(cam)
    e = event(cam, 1, int(time.time() * 1000), cls="forklift", site="depot-3")
    subprocess.run(
        [mosquitto_pub, "-h", stack.settings.mqtt.host, "-p", str(stack.settings.mqtt.port), "-q", "1",
         "-u", user, "-P", password, "-t", stack.settings.mqtt_topics.events(cam), "-m", json.dumps(e)],
        check=True, timeout=30,
    )

    async def row():
        return await stack.query("SELECT site, objects FROM camera_minute_counts WHERE camera_id = $1", cam)

    rows = await wait_for(row, 120, "the mosquitto_pub event in SQL")
    assert [(r["site"], r["objects"]) for r in rows] == [("depot-3", 1)]
