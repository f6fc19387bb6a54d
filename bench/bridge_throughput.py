"""The bridge's speed against a bare MQTT subscriber's, and two bridges against one.

Run: .venv/bin/python -m bench.bridge_throughput [--messages 3000] [--per-message 50] [--cameras 200]
(starts the local services if they are not up; uses topics of its own).

Each part takes the same load: ``--messages`` MQTT messages of
``--per-message`` events (edge batches from ``--cameras`` cameras spread
over every shard), published at QoS 1 as fast as this process can while the
subscriber runs, so the broker queues what the subscriber has not taken yet.
Events/s is measured from the first event taken to the last:

1. bare: one paho client on a persistent session, QoS 1, subscribed to every
   shard's events, that counts and JSON-decodes what it gets (no Kafka);
2. one ``fleetsight bridge`` (validate, write to Kafka with acks=all, wait
   for Kafka, ack to the broker, publish watermarks), taken at the events
   topic's end offsets;
3. two bridges sharing the shards through their consumer group.

The publisher shares the machine with what it measures; so does the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, TopicPartition

from devtools.processes import spawn, stop, wait_bridge_lanes, wait_bridge_online
from devtools.sandbox import Sandbox
from devtools.services import Services
from fleetsight.mqtt_users import admin_settings
from runtime.kafka_admin import ensure_topics
from runtime.kafka_client import kafka_security
from runtime.kafka_offsets import log_offsets
from runtime.mqtt import make_client
from runtime.settings import Settings, load_settings
from runtime.waiting import wait_until
from schemas.codec import Event, encode
from schemas.topics import SHARDS, MqttTopics


def backlog(root: str, cameras: int, messages: int, per_message: int, first_seq: int, legacy: bool) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs: each camera's events in seq order, round-robin over cameras."""
    topics = MqttTopics(root)
    where = topics.legacy_events if legacy else topics.events
    now = int(time.time() * 1000)
    out = []
    for m in range(messages):
        camera = f"cam-{m % cameras}"
        seq0 = first_seq + (m // cameras) * per_message
        events = [
            Event(camera, "bench", seq0 + i, now, "track.start", {"track_id": seq0 + i, "class": "person", "confidence": 0.8})
            for i in range(per_message)
        ]
        out.append((where(camera), encode(events)))
    return out


class Publisher:
    """The admin login (it may publish for any camera), publishing in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.client = make_client(admin_settings(settings), f"bench-pub-{uuid.uuid4().hex[:6]}", persistent=False)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(settings.mqtt.host, settings.mqtt.port)
        self.client.loop_start()

    def send(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(120)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bare_rate(settings: Settings, items: list[tuple[str, bytes]], per_message: int) -> float:
    """Events/s a bare QoS 1 subscriber takes (and JSON-decodes) the messages at."""
    total = len(items)
    got = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        json.loads(msg.payload)
        got["first"] = got["first"] or time.perf_counter()
        got["n"] += 1
        if got["n"] >= total:
            got["last"] = time.perf_counter()
            done.set()

    client = make_client(admin_settings(settings), f"bench-bare-{uuid.uuid4().hex[:6]}", persistent=True)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(settings.mqtt_topics.all_events(), 1), (f"{settings.mqtt_topic_root}/cameras/+/events", 1)])
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    publisher = Publisher(settings)
    try:
        if not subscribed.wait(30):
            raise RuntimeError("the bare subscriber did not subscribe")
        publisher.send(items)
        if not done.wait(300):
            raise RuntimeError(f"the bare subscriber got {got['n']} of {total} messages")
    finally:
        publisher.close()
        client.loop_stop()
        client.disconnect()
    return (total - 1) * per_message / (got["last"] - got["first"])


async def records_in_kafka(settings: Settings) -> dict[int, int]:
    async with log_offsets(settings) as log:
        return await log.ends(settings.kafka_topics.events)


async def events_into_kafka(settings: Settings, since: dict[int, int], events: int, deadline: float) -> list[tuple[float, int]]:
    """(time, events in Kafka past ``since``) each time more came, until ``events`` or the deadline.

    Counted in the records, not as records: the bridge packs a camera's
    waiting messages into one (``streams.packing``). An event's ``"seq":``
    is counted, not decoded, to take little of the box from the bridge.
    """
    topic = settings.kafka_topics.events
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **kafka_security(settings))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in since]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since[tp.partition])
        samples: list[tuple[float, int]] = []
        n = 0
        while n < events and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                n += sum(m.value.count(b'"seq":') for m in messages)
            if not samples or n > samples[-1][1]:
                samples.append((time.perf_counter(), n))
        return samples
    finally:
        await consumer.stop()


def bridge_rate(settings: Settings, items: list[tuple[str, bytes]], per_message: int, bridges: int, logs: Path) -> float:
    """Events/s ``bridges`` bridges move the messages into Kafka at (first record to last)."""
    procs = [
        # Metrics port 0: not served (two bridges on one host).
        spawn("bridge", settings.model_copy(update={"bridge_metrics_port": 0}), logs / f"bridge-{bridges}-{i}.log")
        for i in range(bridges)
    ]
    try:
        if not wait_bridge_online(settings, 120):
            raise RuntimeError(f"the bridges did not come online; logs in {logs}")
        if bridges > 1:
            # Settled: every bridge carries some shards (the group has dealt them all out).
            wait_until(lambda: all("carrying shards" in (logs / f"bridge-{bridges}-{i}.log").read_text()
                                   for i in range(bridges)), 60, "every bridge to carry shards")
            if not wait_bridge_lanes(settings, lambda lanes: all(v == b"online" for v in lanes.values()) and len(lanes) == SHARDS + 1, 60):
                raise RuntimeError("the lanes did not settle")
        before = asyncio.run(records_in_kafka(settings))
        total = len(items) * per_message
        publisher = Publisher(settings)
        sender = threading.Thread(target=publisher.send, args=(items,))
        sender.start()
        samples = asyncio.run(events_into_kafka(settings, before, total, time.monotonic() + 600))
        sender.join()
        publisher.close()
        start = next((t, n) for t, n in samples if n > 0)
        end = next(((t, n) for t, n in samples if n >= total), None)
        if end is None:
            raise RuntimeError(f"only {samples[-1][1] if samples else 0} of {total} events reached Kafka; logs in {logs}")
        return (end[1] - start[1]) / (end[0] - start[0])
    finally:
        stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--per-message", type=int, default=50, help="events per MQTT message (the edge's batch)")
    parser.add_argument("--cameras", type=int, default=200)
    parser.add_argument("--legacy", action="store_true",
                        help="cameras on the layout from before shards: one lane (one MQTT session) carries them all")
    args = parser.parse_args()
    base = load_settings()
    Services(base).up()
    box = Sandbox(base, prefix="bbench")
    try:
        run(box, args)
    finally:
        asyncio.run(box.remove())


def run(box: Sandbox, args: argparse.Namespace) -> None:
    name, settings = box.name, box.settings
    asyncio.run(ensure_topics(settings))
    logs = Path(tempfile.mkdtemp(prefix="fleetsight-bridge-bench-"))
    rounds = [backlog(name, args.cameras, args.messages, args.per_message, 1 + r * args.messages * args.per_message, args.legacy)
              for r in range(4)]
    events = args.messages * args.per_message
    layout = "the legacy layout (one lane)" if args.legacy else f"{SHARDS} shards"
    print(f"{args.messages} messages of {args.per_message} events ({events} events) from {args.cameras} cameras on {layout}, a round")
    # The bare subscriber before and after one bridge, the faster taken (the
    # box's neighbours move either by up to half from one minute to the next).
    before = bare_rate(settings, rounds[0], args.per_message)
    one = bridge_rate(settings, rounds[1], args.per_message, 1, logs)
    after = bare_rate(settings, rounds[3], args.per_message)
    bare = max(before, after)
    print(f"  bare QoS 1 subscriber (JSON decode): {bare:9.0f} events/s  (the faster of {before:.0f} before, {after:.0f} after)")
    print(f"  one bridge, into Kafka:              {one:9.0f} events/s  ({one / bare:.2f} of bare)")
    two = bridge_rate(settings, rounds[2], args.per_message, 2, logs)
    print(f"  two bridges, into Kafka:             {two:9.0f} events/s  ({two / one:.2f} of one bridge)")
    print(f"  logs: {logs}")


if __name__ == "__main__":
    main()
