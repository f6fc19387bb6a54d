"""How many RTSP cameras one edge box runs in real time, against the bare onnxruntime limit.

Run: .venv/bin/python -m bench.edge_capacity [--rate 5] [--from 4] [--seconds 30]
         [--against ../wt-before] [--also model.name=nanodet-g-416-int8 ...] [--model nanodet-plus-m-416 ...]
         [--set SETTING=VALUE ...]

1. Bare limit, measured first in the same run: the model alone on real
   frames letterboxed as the detector does, no decoding, tracking or
   anything else. Two ways, the better one is the limit: one inference at a
   time on every core (the session's default threads), and one per core at
   once, each on one thread (as a site runs them). At ``rate`` detections a
   second per camera, inferences per second / rate is the most cameras the
   model alone allows.
2. Cameras: a GStreamer RTSP server on loopback serves ``vtest.avi`` at
   10 fps as H.264 (one encoder for all clients, about 4 % of a core), and
   one site process (``bench/capacity_probe.py``, running ``edge.site``)
   runs N cameras on it with the defaults a user gets plus the PETS lines
   and zones and ``detect.fps: rate``; an outbox each, no broker (the events
   stay in the outboxes, which costs the box the same). After a warm-up it
   measures for ``seconds``. N is sustained when every camera met at least
   99 % of its detection instants (a detection run, or skipped by the
   motion gate, at the rate) and the lag from a frame's arrival to the end
   of its processing stayed within 300 ms at p95. N grows by one from
   ``--from`` until it is not sustained.
3. Side by side, each N for each one after the other: ``--against DIR``,
   the edge code of another checkout (a git worktree of an older commit:
   the ratio of the two is the gain), and ``--also SETTING=VALUE``, this
   checkout with other settings (a lever), and ``--model NAME``, this checkout
   running another architecture of ``edge/models/models.json`` (a brought
   one is read from ``../shared/models/``, never shipped). ``--set`` applies
   to all.

Prints, per N, what each camera kept up with, and CPU per stage in ms a
frame (decode, gate, preprocess, inference, nms, tracking, scene, outbox;
the capture threads and the site's own work), then the largest sustained N
and its ratio to the bare limit. Machines differ and a shared 2-core box is
noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import yaml

from bench.common import ROOT, VIDEO, parse_settings, sample_frames
from devtools.model_files import missing, model_settings
from devtools.ports import free_port
from devtools.rtsp import RtspServer
from edge.detector import Detector
from edge.model_spec import DEFAULT_MODEL, model_spec
from edge.stages import STAGES as PIPELINE_STAGES

FPS = 10
DUE_MIN = 0.99
LAG_LIMIT_MS = 300.0
STAGES = ("decode", *PIPELINE_STAGES)


@dataclass(frozen=True)
class Variant:
    """What runs the cameras: a checkout's edge code and settings over the camera file."""

    label: str
    code: Path
    settings: dict


@dataclass
class Result:
    variant: str
    cameras: int
    fps_min: float
    missed_max: float
    due_min: float
    lag_p95_ms: float
    cpu: float  # cores, the whole box
    ms_per_frame: dict[str, float]  # CPU per stage per frame processed, all cameras
    inference_ms: float  # CPU per detection run

    @property
    def sustained(self) -> bool:
        return self.due_min >= DUE_MIN and self.lag_p95_ms <= LAG_LIMIT_MS


def bare_limit(settings: dict, rate: float, frames: int = 40, rounds: int = 3) -> tuple[float, float, float]:
    """Inferences a second of the bare model: (one at a time on every core, one per core at once, ms per inference of the first)."""
    path = Path(settings["model.path"]) if settings.get("model.path") else None
    spec = model_spec(settings.get("model.name", DEFAULT_MODEL), path, hashlib.sha256(path.read_bytes()).hexdigest() if path else None)
    if settings.get("model.input_size"):
        spec = dataclasses.replace(spec, input_size=settings["model.input_size"])
    images, _ = sample_frames(limit=frames)
    blobs = [Detector(spec).preprocess(image)[0] for image in images]

    def session(threads: int | None) -> ort.InferenceSession:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        s = ort.InferenceSession(str(spec.path), options, providers=["CPUExecutionProvider"])
        s.run(None, {s.get_inputs()[0].name: blobs[0]})
        return s

    def loop(s: ort.InferenceSession) -> None:
        name = s.get_inputs()[0].name
        for _ in range(rounds):
            for blob in blobs:
                s.run(None, {name: blob})

    whole = session(None)
    started = time.perf_counter()
    loop(whole)
    one_at_a_time = rounds * len(blobs) / (time.perf_counter() - started)
    cores = os.cpu_count() or 1
    sessions = [session(1) for _ in range(cores)]
    workers = [threading.Thread(target=loop, args=(s,)) for s in sessions]  # onnxruntime releases the GIL while it runs
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    per_core = cores * rounds * len(blobs) / (time.perf_counter() - started)
    return one_at_a_time, per_core, 1000 / one_at_a_time


def camera_doc(rate: float, settings: dict) -> dict:
    """The PETS benchmark camera (its lines and zones) as a live camera at ``rate``, with the dotted settings over it."""
    doc = yaml.safe_load((ROOT / "bench" / "pets09-s2l1.yaml").read_text())
    for key in ("source", "camera_id", "occupancy_interval_s"):
        doc.pop(key, None)
    doc["detect"] = {"fps": rate}
    for dotted, value in settings.items():
        *parents, name = dotted.split(".")
        target = doc
        for part in parents:
            target = target.setdefault(part, {})
        target[name] = value
    if "model.path" in settings:
        doc["model"]["sha256"] = hashlib.sha256(Path(settings["model.path"]).read_bytes()).hexdigest()
    return doc


def run_probe(variant: Variant, n: int, server: RtspServer, rate: float, seconds: float, workdir: Path) -> Result:
    """N cameras in one site process running ``variant``."""
    job = {"cameras": n, "camera": camera_doc(rate, variant.settings), "url": server.url(), "seconds": seconds, "workdir": str(workdir),
           "dead_port": free_port()}
    env = {**os.environ, "PYTHONPATH": str(variant.code)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "capacity_probe.py"), json.dumps(job)], cwd=variant.code, env=env,
                         capture_output=True, text=True, timeout=seconds + 240)
    if out.returncode != 0:
        raise RuntimeError(f"probe of {n} cameras with {variant.label} failed:\n{out.stderr[-3000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    elapsed, cams = m["elapsed_s"], m["cameras"]
    frames = sum(c["frames"] for c in cams) or 1
    runs = sum(c["runs"] for c in cams) or 1
    per_frame = {s: 1000 * sum(c["stages"].get(s, 0.0) for c in cams) / frames for s in STAGES if s != "decode"}
    threads = m["threads_cpu_s"]
    per_frame["decode"] = 1000 * threads.get("capture", 0.0) / frames  # the capture threads and FFmpeg's: RTSP, H.264
    counted = sum(per_frame.values()) - per_frame["decode"]
    pipeline = 1000 * threads.get("pipeline", 0.0) / frames
    # An older checkout counts no stages: its pipeline threads' CPU is all "rest of pipeline".
    per_frame["rest of pipeline"] = max(0.0, pipeline - counted)
    per_frame["event loop"] = 1000 * threads.get("loop", 0.0) / frames  # uplinks, status lines
    per_frame["other threads"] = 1000 * sum(v for k, v in threads.items() if k.startswith("other")) / frames
    return Result(
        variant=variant.label, cameras=n,
        fps_min=min(c["frames"] for c in cams) / elapsed,
        missed_max=max(c["missed"] / max(1, c["frames"] + c["missed"]) for c in cams),
        due_min=min(on_time(c, elapsed, rate) for c in cams),
        lag_p95_ms=m["lag_p95_ms"] if m["lag_p95_ms"] is not None else float("inf"),
        cpu=m["box_cpu_s"] / elapsed, ms_per_frame=per_frame,
        inference_ms=1000 * sum(c["stages"].get("inference", 0.0) for c in cams) / runs,
    )


def on_time(camera: dict, elapsed: float, rate: float) -> float:
    """Share of a camera's detection instants that had a frame (the detector ran, or the gate skipped it):
    counted by the pipeline where it counts the instants that passed; else against the wall clock
    (one instant more or less at each end of the window: 1 % of 20 s at 5 fps)."""
    if camera["late"] is not None:
        return camera["due"] / max(1, camera["due"] + camera["late"])
    return camera["due"] / elapsed / rate


def describe(r: Result) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in r.ms_per_frame.items() if v or k == "decode")
    return (
        f"N={r.cameras}: {r.fps_min:.1f} fps (worst camera), missed {r.missed_max:.1%}, detections due met {r.due_min:.1%}, "
        f"lag p95 {r.lag_p95_ms:.0f} ms, box CPU {r.cpu:.2f} cores -> {'sustained' if r.sustained else 'NOT sustained'}\n"
        f"      CPU ms a frame: {stages}" + (f"; inference {r.inference_ms:.1f} ms a detection" if r.inference_ms else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="detections a second per camera (default 5)")
    parser.add_argument("--from", dest="start", type=int, default=4, help="first N (default 4)")
    parser.add_argument("--to", type=int, default=16, help="last N tried (default 16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per N")
    parser.add_argument("--against", type=Path, help="another checkout (a git worktree of an older commit) to run side by side")
    parser.add_argument("--also", action="append", default=[], metavar="SETTING=VALUE[,SETTING=VALUE]",
                        help="this checkout with these settings too, side by side (repeat for more variants)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="this checkout running another architecture too, side by side (a brought one from ../shared/models)")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE", help="a camera setting, dotted, the value in YAML")
    args = parser.parse_args()
    settings = parse_settings(args.set)
    absent = missing(args.model)
    if absent:
        print(f"model files not found: {', '.join(map(str, absent))} (see ../shared/models/README.md)", file=sys.stderr)
        return 2
    variants = [Variant("this checkout", ROOT, settings)]
    variants += [Variant(also, ROOT, settings | parse_settings(also.split(","))) for also in args.also]
    variants += [Variant(name, ROOT, settings | model_settings(name)) for name in args.model]
    if args.against:
        variants.append(Variant(f"{args.against.name} (another checkout)", args.against.resolve(), settings))
    bares: dict[str, float] = {}  # per variant: cameras the bare model allows
    measured: dict[tuple, float] = {}
    for variant in variants:
        model = tuple(sorted((k, str(v)) for k, v in variant.settings.items() if k.startswith("model.")))
        if model not in measured:
            one, per_core, ms = bare_limit(variant.settings, args.rate)
            measured[model] = max(one, per_core) / args.rate
            print(f"bare onnxruntime, {dict(model) or 'the default model'}: {one:.1f} inferences/s one at a time on every core "
                  f"({ms:.1f} ms each), {per_core:.1f}/s one per core at once -> at most {measured[model]:.1f} cameras at "
                  f"{args.rate:g} fps if the box did nothing else", flush=True)
        bares[variant.label] = measured[model]
    results: dict[str, list[Result]] = {v.label: [] for v in variants}
    going = {v.label for v in variants}
    with tempfile.TemporaryDirectory() as tmp, RtspServer(VIDEO, fps=FPS, log=Path(tmp) / "rtsp.log") as server:
        for n in range(args.start, args.to + 1):
            for i, variant in enumerate(variants):
                if variant.label not in going:
                    continue
                workdir = Path(tmp) / f"{i}-{n}"
                workdir.mkdir()
                r = run_probe(variant, n, server, args.rate, args.seconds, workdir)
                results[variant.label].append(r)
                print(f"[{variant.label}] {describe(r)}", flush=True)
                if not r.sustained:
                    going.discard(variant.label)
            if not going:
                break
    print("\n| variant | cameras | fps (worst camera) | frames missed (worst) | detections on time (worst) | lag p95 | CPU (cores) | real time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, rs in results.items():
        for r in rs:
            print(f"| {label} | {r.cameras} | {r.fps_min:.1f} | {r.missed_max:.1%} | {r.due_min:.1%} | "
                  f"{r.lag_p95_ms:.0f} ms | {r.cpu:.2f} | {'yes' if r.sustained else 'no'} |")
    best = {label: max((r.cameras for r in rs if r.sustained), default=0) for label, rs in results.items()}
    base = best[variants[-1].label] if args.against else 0
    for label, rs in results.items():
        gain = f"; {best[label] / base:.2f}x {variants[-1].label}" if base and label != variants[-1].label else ""
        print(f"{label}: largest sustained {best[label]} cameras, {best[label] / bares[label]:.2f} of its model's bare limit{gain}")
        sustained = [r for r in rs if r.sustained]
        if sustained:
            print("    CPU ms a frame at that N: " + ", ".join(f"{k} {v:.1f}" for k, v in sustained[-1].ms_per_frame.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
