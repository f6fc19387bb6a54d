"""A site's cameras in one process: ``fleetsight edge run --config site.yaml``.

Each camera stays a ``CameraNode`` of its own (its outbox, its MQTT login
and ACL, its scene, its rollouts: nothing in the delivery contract
changes); what they share is the process, the model session of each model
file (``edge.detector``: one inference at a time, on every core) and one
/metrics endpoint. Every camera's video runs in threads of its own, so one
broken or frozen stream only makes its own camera idle. A camera whose loop
fails (a file that cannot be read) is logged and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from edge.config import SiteConfig
from edge.node import CameraNode
from runtime import metrics
from runtime.settings import EdgeSettings

log = logging.getLogger("fleetsight.edge.site")


class Site:
    """The cameras of one site file; see the module docstring."""

    def __init__(
        self, config: SiteConfig, settings: EdgeSettings, *, debug_dir: Path | None = None, max_frames: int | None = None,
    ) -> None:
        self.config = config
        if len(config.cameras) > 1:
            for camera in config.cameras:
                # One inference per core at a time, each on one thread, beats one
                # at a time on every core: 4 cameras at 5 fps on 2 cores kept 9.5
                # of 10 frames a second each this way, 5.7 the other (BENCHMARKS.md).
                if camera.model.threads is None:
                    camera.model.threads = 1
        self.nodes = [
            CameraNode(camera, settings, debug_dir=debug_dir / camera.camera_id if debug_dir else None, max_frames=max_frames)
            for camera in config.cameras
        ]

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 30.0, progress: bool = False) -> bool:
        """Run every camera until ``stop`` (or until all their sources end); True if the cloud confirmed everything."""
        metrics.serve(self.config.metrics_port, self.config.metrics_bind)
        reporter = asyncio.create_task(self._report(progress))
        try:
            results = await asyncio.gather(
                *(node.run(stop, drain_timeout_s, serve_metrics=False, report=False) for node in self.nodes), return_exceptions=True,
            )
        finally:
            reporter.cancel()
            if progress:
                sys.stderr.write("\n")
        drained = True
        for node, result in zip(self.nodes, results):
            if isinstance(result, BaseException):
                log.error("%s stopped: %s", node.config.camera_id, result)
                drained = False
            elif not result:
                drained = False
        return drained

    def status_lines(self) -> list[str]:
        return [node.status_line() for node in self.nodes]

    async def _report(self, progress: bool) -> None:
        """A live block of lines on a terminal, one per camera; log lines every health interval otherwise."""
        interval = 1.0 if progress else min(node.config.health_interval_s for node in self.nodes)
        shown = 0
        while True:
            await asyncio.sleep(interval)
            for node in self.nodes:
                node.update_gauges()
            lines = self.status_lines()
            if progress:
                up = f"\033[{shown}F" if shown else ""
                sys.stderr.write(up + "".join(f"\033[K{line}\n" for line in lines))
                sys.stderr.flush()
                shown = len(lines)
            else:
                for line in lines:
                    log.info("%s", line)
