"""Every long-running process serves Prometheus metrics that move with the traffic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from devtools.ports import free_port
from edge.config import CameraConfig, OutboxConfig, SourceConfig
from edge.node import CameraNode
from runtime.waiting import wait_for
from tests.support import publish, scrape, total
from tests.support.hostile import good_event

pytestmark = pytest.mark.integration


async def test_bridge_worker_sink_and_edge_export_metrics(stack_factory, media: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("bridge", "worker", "sink", "edge")}
    stack = await stack_factory(
        bridge_metrics_port=ports["bridge"], worker_metrics_port=ports["worker"], sink_metrics_port=ports["sink"],
    )
    for component in ("bridge", "worker", "sink"):
        stack.start(component)
    await stack.wait_bridge_online()
    topics = stack.settings.mqtt_topics
    now = int(time.time() * 1000)
    publish(stack.settings, [(topics.events("met-a"), json.dumps(good_event("met-a", s, now)).encode()) for s in range(1, 21)]
            + [(topics.events("met-a"), b"not json")])

    async def moved() -> bool:
        stack.assert_running()
        try:
            bridge, worker, sink = scrape(ports["bridge"]), scrape(ports["worker"]), scrape(ports["sink"])
        except OSError:
            return False
        return (
            bridge.get("fleetsight_bridge_events_forwarded_total", 0) >= 20
            and total(bridge, r'fleetsight_bridge_deadletters_total\{reason="malformed"\}') >= 1
            and total(worker, r'fleetsight_worker_events_total\{result="applied"\}') >= 20
            and worker.get("fleetsight_worker_event_lag_seconds_count", 0) >= 1
            and worker.get('fleetsight_worker_cameras{state="online"}', 0) >= 1  # counted by the status sweep
            and total(sink, r'fleetsight_sink_rows_written_total\{table="camera_minute_counts"\}') >= 1
            and sink.get("fleetsight_sink_write_seconds_count", 0) >= 1
        )

    await wait_for(moved, 120, "bridge, worker and sink metrics to count the traffic")

    stack.camera_login("met-video")
    config = CameraConfig(
        camera_id="met-video", site="metrics", source=SourceConfig(uri=str(media / "vtest.avi"), realtime=False),
        outbox=OutboxConfig(path=tmp_path / "outbox.sqlite3"), metrics_port=ports["edge"],
    )
    node = CameraNode(config, stack.settings, max_frames=30)
    assert await asyncio.wait_for(node.run(asyncio.Event(), drain_timeout_s=60), 120)
    edge = scrape(ports["edge"])
    assert edge['fleetsight_edge_frames_total{camera="met-video"}'] == 30
    assert edge['fleetsight_edge_inference_seconds_count{camera="met-video"}'] >= 1
    assert total(edge, r'fleetsight_edge_events_total\{camera="met-video",type="track.start"\}') >= 1
    assert edge['fleetsight_edge_model_info{camera="met-video",version="nanodet-g-416@2"}'] == 1
