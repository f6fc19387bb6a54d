"""A site's runner: every camera honours --max-frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devtools.ports import free_port
from edge.config import CameraConfig, DetectConfig, OutboxConfig, SiteConfig, SourceConfig
from edge.site import Site
from runtime.settings import EdgeSettings


async def test_each_camera_of_a_site_stops_after_max_frames(media: Path, tmp_path: Path) -> None:
    cameras = [
        CameraConfig(camera_id=f"cam-{i}", site="s", source=SourceConfig(uri=str(media / "vtest.avi")), detect=DetectConfig(fps=5),
                     outbox=OutboxConfig(path=tmp_path / f"o{i}.sqlite3"), metrics_port=0)
        for i in range(2)
    ]
    # No broker listens: the events stay in the outboxes, and the run returns after the drain timeout.
    site = Site(SiteConfig(cameras, None, "127.0.0.1"), EdgeSettings(mqtt_url=f"mqtt://127.0.0.1:{free_port()}"), max_frames=25)
    drained = await asyncio.wait_for(site.run(asyncio.Event(), drain_timeout_s=0.5), 120)
    assert not drained
    assert [node.stats.frames for node in site.nodes] == [25, 25]
