"""One site process with N cameras on an RTSP server, measured: the child of ``bench/edge_capacity.py``.

Run by it as ``PYTHONPATH=<checkout> python bench/capacity_probe.py '<json>'`` (a script: it
imports nothing of ``bench``),
so the cameras run the edge code of that checkout (today's or an older
one, from a git worktree) while this file stays the same. Prints one JSON
line: per camera frames processed and missed, detection instants due and
met, lag from a frame's arrival to the end of its processing, and CPU per
stage (where the checkout's pipeline counts it) and per kind of thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import yaml

from edge.config import SiteConfig, load_camera_config
from edge.site import Site
from runtime.settings import EdgeSettings

WARMUP_S = 8.0


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per kind of thread of this process: the pipelines (``video`` threads), the
    capture threads (RTSP, demuxing, decoding) with FFmpeg's own decoder threads, the event loop, the rest."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            head, tail = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        name = names.get(int(tid)) or head.split("(", 1)[1]  # a native thread: its comm
        kind = (
            "pipeline" if name.startswith("video ") else "capture" if name.startswith("capture ") or name.startswith("av:")
            else "loop" if name == "MainThread" else f"other:{name}"
        )
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def box_cpu_s() -> float:
    """CPU seconds the whole box has spent (all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def counters(site: Site) -> list[dict]:
    out = []
    for node in site.nodes:
        stages = getattr(node.stats, "stages", None)  # older checkouts do not count stages
        out.append({
            "frames": node.stats.frames, "missed": node.source.missed, "due": node.stats.detect_due, "runs": node.stats.detector_runs,
            "late": getattr(node.stats, "detect_missed", None),  # older checkouts do not count it
            "stages": stages.snapshot() if stages is not None else {},
        })
    return out


async def probe(job: dict) -> dict:
    workdir = Path(job["workdir"])
    configs = []
    for i in range(job["cameras"]):
        path = workdir / f"cam-{i}.yaml"
        path.write_text(yaml.safe_dump({**job["camera"], "camera_id": f"cap-{i}", "source": {"uri": job["url"]}}))
        configs.append(load_camera_config(path))
    # Nothing listens on the broker port: the uplinks retry, the outboxes keep everything (it costs the box the same).
    site = Site(SiteConfig(configs, None, "127.0.0.1"), EdgeSettings(mqtt_url=f"mqtt://127.0.0.1:{job['dead_port']}"))
    stop = asyncio.Event()
    run = asyncio.create_task(site.run(stop))
    try:
        deadline = time.monotonic() + 60
        while not all(node.source.state == "ok" for node in site.nodes):
            if time.monotonic() > deadline or run.done():
                raise RuntimeError(f"{job['cameras']} cameras did not all start: {[node.source.state for node in site.nodes]}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(WARMUP_S)
        before = counters(site)
        for node in site.nodes:
            node.stats.lag_ms.clear()
        box0, threads0, t0 = box_cpu_s(), thread_cpu(), time.monotonic()
        await asyncio.sleep(job["seconds"])
        elapsed, box = time.monotonic() - t0, box_cpu_s() - box0
        threads1 = thread_cpu()
        after = counters(site)
        lags = sorted(v for node in site.nodes for v in node.stats.lag_ms)
    finally:
        stop.set()
        await asyncio.wait_for(run, 60)
    cameras = []
    for a, b in zip(after, before):
        cameras.append({k: a[k] - b[k] for k in ("frames", "missed", "due", "runs")}
                       | {"late": a["late"] - b["late"] if a["late"] is not None else None}
                       | {"stages": {s: a["stages"].get(s, 0.0) - b["stages"].get(s, 0.0) for s in a["stages"]}})
    return {
        "elapsed_s": elapsed, "box_cpu_s": box, "cameras": cameras, "lag_p95_ms": lags[int(0.95 * (len(lags) - 1))] if lags else None,
        "threads_cpu_s": {k: threads1.get(k, 0.0) - threads0.get(k, 0.0) for k in threads1},
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(asyncio.run(probe(json.loads(sys.argv[1])))))
