"""Upstream bytes of a camera node against sending its frames as JPEG.

Run: .venv/bin/python -m bench.edge_bandwidth [--quality 80]

Runs the edge pipeline over the whole sample video (gate on, a line and a
zone, health every 30 s, occupancy every 10 s). Each frame's stored events
form one MQTT message, as the uplink sends them when it keeps up at the
camera's pace; bytes are whole PUBLISH packets. The baseline encodes every
frame as JPEG at the same fps and counts only the image bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from bench.common import EVENTS_TOPIC, camera_config, mqtt_publish_size, sample_frames
from edge.capture import Frame
from edge.detector import build_detector
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene
from schemas.codec import encode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=int, default=80)
    args = parser.parse_args()
    frames, fps = sample_frames()
    duration_s = len(frames) / fps

    jpeg = sum(len(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, args.quality])[1]) for f in frames)

    config = camera_config(gate=True)
    messages: list[bytes] = []
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite3", config.camera_id, config.site)
        pipeline = Pipeline(
            config, build_detector(config), build_scene(config), outbox, fps,
            on_stored=lambda events: messages.append(encode(events)),
        )
        ts = int(time.time() * 1000)
        for i, image in enumerate(frames):
            pipeline.step(Frame(i, ts + int(i * 1000 / fps), i / fps, image))
        pipeline.finish(source_ended=True)
        events = sum(pipeline.stats.events.values())
        outbox.close()
    ours = sum(mqtt_publish_size(EVENTS_TOPIC, m) for m in messages)

    hour = 3600 / duration_s
    print(f"sample video: {len(frames)} frames, {duration_s:.1f} s at {fps:.0f} fps, {frames[0].shape[1]}x{frames[0].shape[0]}")
    print(f"events: {events} in {len(messages)} MQTT messages, {ours / events:.0f} bytes per event on the wire")
    print(f"FleetSight events: {ours * hour / 1e6:10.3f} MB per camera-hour")
    print(f"JPEG frames (q{args.quality}): {jpeg * hour / 1e6:10.1f} MB per camera-hour")
    print(f"ratio JPEG / events: {jpeg / ours:.0f}x less upstream")


if __name__ == "__main__":
    main()
