"""Edge loop speed against a bare onnxruntime loop, and what the motion gate saves.

Run: .venv/bin/python -m bench.edge_loop [--frames 300] [--threads 2] [--rounds 3]

1. Same decoded frames, same model, same onnxruntime thread settings, gate
   off: frames/s of our whole per-frame pipeline (preprocess, inference,
   decode + NMS, tracking, lines and zones, SQLite outbox) divided by the
   frames/s of a bare loop (resize, normalise, session.run). Rounds
   alternate between the two; the median of each is used.
2. The whole sample video with the gate on and off: detector calls, time,
   and the events each run produced. The sample is a busy square where
   someone moves in almost every frame, so
3. the same with a 30 s still stretch spliced in (one real frame held,
   with sensor noise added), as a camera sees in a quiet hour.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from bench.common import camera_config, sample_frames
from edge.capture import Frame
from edge.detector import build_detector
from edge.model_spec import model_spec
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene


def bare_loop(frames: list[np.ndarray], threads: int) -> float:
    spec = model_spec()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(spec.path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mean = np.array(spec.mean, np.float32)
    inv_std = 1 / np.array(spec.std, np.float32)
    size = spec.input_size
    started = time.perf_counter()
    for image in frames:
        blob = ((cv2.resize(image, (size, size)).astype(np.float32) - mean) * inv_std).transpose(2, 0, 1)[None]
        session.run(None, {name: blob})
    return len(frames) / (time.perf_counter() - started)


def pipeline_run(frames: list[np.ndarray], fps: float, gate: bool, threads: int) -> tuple[float, Pipeline]:
    config = camera_config(gate=gate, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite3", config.camera_id, config.site)
        pipeline = Pipeline(config, build_detector(config), build_scene(config), outbox, fps)
        ts = int(time.time() * 1000)
        started = time.perf_counter()
        for i, image in enumerate(frames):
            pipeline.step(Frame(i, ts + int(i * 1000 / fps), i / fps, image))
        pipeline.finish(source_ended=True)
        elapsed = time.perf_counter() - started
        outbox.close()
    return len(frames) / elapsed, pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    frames, fps = sample_frames()
    head = frames[: args.frames]
    bare_loop(head[:20], args.threads)  # warm-up: first runs allocate
    pipeline_run(head[:20], fps, False, args.threads)
    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop(head, args.threads))
        ours.append(pipeline_run(head, fps, False, args.threads)[0])
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"1. edge loop vs bare onnxruntime loop ({len(head)} frames of vtest.avi, {args.threads} threads, gate off)")
    print(f"   bare onnxruntime: {b:6.1f} frames/s   (rounds: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"   FleetSight loop:  {o:6.1f} frames/s   (rounds: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"   ratio: {o / b:.2f}")

    gate_report("2. motion gate on the whole sample video", frames, fps, args.threads)
    rng = np.random.default_rng(0)
    still = frames[400]
    quiet = frames[:400] + [
        np.clip(still.astype(np.int16) + rng.normal(0, 2.0, still.shape).astype(np.int16), 0, 255).astype(np.uint8)
        for _ in range(int(30 * fps))
    ] + frames[400:]
    gate_report("3. motion gate with a 30 s still stretch spliced in", quiet, fps, args.threads)


def gate_report(title: str, frames: list[np.ndarray], fps: float, threads: int) -> None:
    runs = {gate: pipeline_run(frames, fps, gate, threads) for gate in (False, True)}
    (off_speed, off), (on_speed, on) = runs[False], runs[True]
    off, on = off.stats, on.stats
    print(f"\n{title} ({len(frames)} frames)")
    print(f"   {'':<18}{'gate off':>10}{'gate on':>10}")
    print(f"   {'frames/s':<18}{off_speed:>10.1f}{on_speed:>10.1f}")
    print(f"   {'detector calls':<18}{off.detector_runs:>10}{on.detector_runs:>10}")
    kinds = sorted(set(off.events) | set(on.events))
    for kind in kinds:
        print(f"   {kind:<18}{off.events[kind]:>10}{on.events[kind]:>10}")
    print(f"   speed-up: {on_speed / off_speed:.2f}x, detector calls saved: {1 - on.detector_runs / off.detector_runs:.0%}")
    diff = {k: on.events[k] - off.events[k] for k in kinds if on.events[k] != off.events[k]}
    print(f"   event count differences (on - off): {diff or 'none'}")

if __name__ == "__main__":
    main()
