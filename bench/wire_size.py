"""Bytes per event on the MQTT wire: JSON vs MessagePack, single vs batched.

Run: .venv/bin/python -m bench.wire_size
The baseline is one JSON event per MQTT message (what mosquitto_pub sends);
ratios below 1 mean fewer bytes than that.
"""

from __future__ import annotations

import random

from bench.common import mqtt_publish_size
from edge.simulate import make_event
from schemas.codec import Event, encode
from schemas.topics import MqttTopics

CAMERA = "cam-entrance-01"
TOPIC = MqttTopics().events(CAMERA)


def sample_events(n: int) -> list[Event]:
    rng = random.Random(42)
    out = []
    ts = 1764072000000
    for seq in range(1, n + 1):
        ts += rng.randint(50, 400)
        new = make_event(rng, seq, ts, seq / 10)
        data = dict(new.data)
        if new.type == "track.start":
            x, y = rng.random() * 0.8, rng.random() * 0.8
            data["bbox"] = [round(x, 3), round(y, 3), round(x + 0.1, 3), round(y + 0.2, 3)]
        out.append(Event(CAMERA, "shop-12", 1_000_000 + seq, ts, new.type, data))
    return out


def per_event(events: list[Event], fmt: str, batch: int) -> float:
    total = 0
    for i in range(0, len(events), batch):
        total += mqtt_publish_size(TOPIC, encode(events[i : i + batch], fmt))  # type: ignore[arg-type]
    return total / len(events)


def main() -> None:
    events = sample_events(5000)
    baseline = per_event(events, "json", 1)
    print(f"{'encoding':<10} {'batch':>5} {'bytes/event':>12} {'vs json x1':>10}")
    for fmt in ("json", "msgpack"):
        for batch in (1, 10, 50, 100):
            b = per_event(events, fmt, batch)
            print(f"{fmt:<10} {batch:>5} {b:>12.1f} {b / baseline:>10.2f}")


if __name__ == "__main__":
    main()
