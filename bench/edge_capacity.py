"""How many RTSP cameras one box runs in real time, against the bare onnxruntime limit.

Run: .venv/bin/python bench/edge_capacity.py [--rate 5] [--cameras 4 6 8 10] [--seconds 30] [--model FILE]

1. Bare limit, measured first in the same run: the model alone
   (``session.run`` on real frames letterboxed as the detector does, the
   session's default threads), ms per inference; at ``rate`` detections a
   second per camera that allows 1000 / (ms x rate) cameras, if the box did
   nothing else (no decoding, tracking, gate, outbox). Also ms per frame
   when 2 or 4 cameras' frames go as one batch (the shipped model takes
   any batch), to see whether batching across cameras pays.
2. For each N: a GStreamer RTSP server on loopback serves ``vtest.avi`` at
   10 fps as H.264 (one encoder, N clients: the server's own work shares the
   box, about 4 % of a core), and one site process (``edge.site``) runs N
   cameras on it with the shipped defaults: detection at ``rate``, motion
   gate on, the PETS lines and zones, one SQLite outbox each (no broker: the
   events stay in the outboxes, which costs the box the same). After a
   warm-up it counts, per camera, for ``seconds``: frames processed and
   missed (replaced by a newer one while the node was busy), detection
   instants due at the rate (run or gated), and the lag from a frame's
   arrival to the end of its processing.
   N is sustained in real time when every camera met 95 % of its detection
   instants and its lag p95 stayed within 500 ms. Frames a busy node misses
   are not queued (the newest frame replaces an untaken one), so lag cannot
   grow; missed frames between detections cost nothing but the gate's view,
   and are shown.

Prints a table and the largest sustained N; the numbers vary with the box
and whatever else runs on it, so compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml
from common import ROOT, VIDEO, sample_frames

from devtools.rtsp import RtspServer
from edge.config import SiteConfig, load_camera_config
from edge.detector import Detector, model_spec
from edge.site import Site
from runtime.settings import EdgeSettings

FPS = 10
WARMUP_S = 8.0
LAG_LIMIT_MS = 500.0


@dataclass
class Result:
    cameras: int
    fps_min: float
    missed_max: float
    due_min: float
    lag_p95_ms: float
    detect_ms: float
    cpu: float
    split: dict[str, float]  # cores per kind of thread

    @property
    def sustained(self) -> bool:
        return self.due_min >= 0.95 and self.lag_p95_ms <= LAG_LIMIT_MS


def bare_ms(model: Path | None, input_size: int | None, frames: int = 40, rounds: int = 5) -> tuple[float, dict[int, float]]:
    """ms per inference of the bare session, and ms per frame when frames of several
    cameras go as one batch (rounds alternate between the sizes; medians)."""
    spec = model_spec(path=model, sha256=hashlib.sha256(model.read_bytes()).hexdigest()) if model else model_spec()
    if input_size:
        spec = dataclasses.replace(spec, input_size=input_size)
    detector = Detector(spec)
    images, _ = sample_frames(limit=frames)
    blobs = [detector.preprocess(image)[0] for image in images]
    session = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batches = {size: [np.concatenate(blobs[i:i + size]) for i in range(0, len(blobs) - size + 1, size)] for size in (1, 2, 4)}
    for size in batches:
        session.run(None, {name: batches[size][0]})
    times: dict[int, list[float]] = {size: [] for size in batches}
    for _ in range(rounds):
        for size, feeds in batches.items():
            started = time.perf_counter()
            for batch in feeds:
                session.run(None, {name: batch})
            times[size].append((time.perf_counter() - started) / (len(feeds) * size) * 1000)
    per_frame = {size: statistics.median(t) for size, t in times.items()}
    return per_frame.pop(1), per_frame


def camera_doc(model: Path | None, rate: float, threads: int | None, input_size: int | None) -> dict:
    """The PETS benchmark camera (its lines and zones) as a live camera at ``rate``."""
    doc = yaml.safe_load((ROOT / "bench" / "pets09-s2l1.yaml").read_text())
    doc.pop("source"), doc.pop("camera_id"), doc.pop("occupancy_interval_s", None)
    doc["detect"] = {"fps": rate}
    doc["model"] = {"threads": threads, "input_size": input_size}
    if model:
        doc["model"] |= {"path": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    return doc


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per kind of thread of this process (video loops, capture, the rest)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        kind = "pipeline" if name.startswith("video ") else "capture" if name.startswith("capture ") else "other"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / 100
    return out


def cpu_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / 100  # all but idle and iowait, in seconds (USER_HZ 100)


async def run_site(n: int, server: RtspServer, doc: dict, workdir: Path, seconds: float) -> Result:
    configs = []
    for i in range(n):
        path = workdir / f"cam-{i}.yaml"
        path.write_text(yaml.safe_dump({**doc, "camera_id": f"cap-{n}-{i}", "source": {"uri": server.url()}}))
        configs.append(load_camera_config(path))
    # Nothing listens on the broker port: the uplinks retry, the outboxes keep everything.
    settings = EdgeSettings(mqtt_url=f"mqtt://127.0.0.1:{RtspServer(VIDEO).port}")
    site = Site(SiteConfig(configs, None, "127.0.0.1"), settings)
    stop = asyncio.Event()
    run = asyncio.create_task(site.run(stop))
    try:
        deadline = time.monotonic() + 60
        while not all(node.source.state == "ok" for node in site.nodes):
            if time.monotonic() > deadline or run.done():
                raise RuntimeError(f"{n} cameras did not all start: {[node.source.state for node in site.nodes]}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(WARMUP_S)
        before = [(node.stats.frames, node.source.missed, node.stats.detect_due) for node in site.nodes]
        for node in site.nodes:
            node.stats.lag_ms.clear()
            node.stats.inference_ms.clear()
        cpu0, threads0, t0 = cpu_seconds(), thread_cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
        threads1 = thread_cpu()
        split = {k: (threads1.get(k, 0.0) - threads0.get(k, 0.0)) / elapsed for k in threads1}
        after = [(node.stats.frames, node.source.missed, node.stats.detect_due) for node in site.nodes]
        lags = sorted(v for node in site.nodes for v in node.stats.lag_ms)
        inference = [v for node in site.nodes for v in node.stats.inference_ms]
    finally:
        stop.set()
        await asyncio.wait_for(run, 60)
    fps = [(a[0] - b[0]) / elapsed for a, b in zip(after, before)]
    missed = [(a[1] - b[1]) / max(1, (a[0] - b[0]) + (a[1] - b[1])) for a, b in zip(after, before)]
    due = [(a[2] - b[2]) / elapsed / float(doc["detect"]["fps"]) for a, b in zip(after, before)]
    return Result(
        n, min(fps), max(missed), min(due), lags[int(0.95 * (len(lags) - 1))] if lags else float("inf"),
        statistics.median(inference) if inference else 0.0, cpu / elapsed, split,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="detections a second per camera (default 5)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per N")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per inference (model.threads; default: every core)")
    parser.add_argument("--input-size", type=int, help="model.input_size (default: the model's, 416)")
    parser.add_argument("--model", type=Path, help="another ONNX file of the shipped architecture (default: the shipped model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ms, batched = bare_ms(args.model, args.input_size)
    print(f"bare onnxruntime: {ms:.1f} ms per inference -> {1000 / (ms * args.rate):.1f} cameras at {args.rate:g} fps, if the box did nothing else")
    print("batched across cameras: " + ", ".join(f"batch {n}: {v:.1f} ms a frame" for n, v in batched.items()) + f" (batch 1: {ms:.1f})")
    doc = camera_doc(args.model, args.rate, args.threads, args.input_size)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, RtspServer(VIDEO, fps=FPS, log=Path(tmp) / "rtsp.log") as server:
        for n in args.cameras:
            workdir = Path(tmp) / f"n{n}"
            workdir.mkdir()
            result = asyncio.run(run_site(n, server, doc, workdir, args.seconds))
            results.append(result)
            print(
                f"N={n}: processed {result.fps_min:.1f} fps (worst camera), missed {result.missed_max:.1%}, detections due met "
                f"{result.due_min:.0%}, lag p95 {result.lag_p95_ms:.0f} ms, inference p50 {result.detect_ms:.0f} ms, "
                f"CPU {result.cpu:.2f} cores (pipelines {result.split.get('pipeline', 0):.2f}, capture {result.split.get('capture', 0):.2f}, "
                f"other {result.split.get('other', 0):.2f}) -> {'sustained' if result.sustained else 'NOT sustained'}",
                flush=True,
            )
    print()
    print("| cameras | processed fps (worst) | frames missed (worst) | detections due met | lag p95 | inference p50 | CPU (cores) | real time |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(f"| {r.cameras} | {r.fps_min:.1f} | {r.missed_max:.1%} | {r.due_min:.0%} | {r.lag_p95_ms:.0f} ms | {r.detect_ms:.0f} ms | {r.cpu:.2f} | {'yes' if r.sustained else 'no'} |")
    best = max((r.cameras for r in results if r.sustained), default=0)
    bare = 1000 / (ms * args.rate)
    print(f"\nlargest sustained: {best} cameras at {args.rate:g} fps detection; bare onnxruntime limit {bare:.1f}; ratio {best / bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
