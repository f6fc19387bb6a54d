"""What a model rollout costs the video loop: frame times while a new model
is loaded beside the running one and swapped in, against the same loop with
no rollout.

Run: .venv/bin/python -m bench.model_swap [--frames 240] [--threads 1] [--rounds 3]

Both runs process the same decoded frames of the sample video through the
whole pipeline (gate off, so the detector runs on every frame). In the
rollout run, a thread starts loading the new model (a different file of the
same network, verified by sha256, run once on a blank frame) a third of the
way in, as the edge updater does, and offers it to the switch; the video
thread takes it between two frames. Printed: frames processed (none may be
missing), the median frame time, the worst frame time, and the median while
the load ran, each as a ratio to the run without a rollout.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import camera_config, sample_frames
from edge.capture import Frame
from edge.detector import build_detector
from edge.model_spec import model_spec
from edge.model_switch import ModelSwitch
from edge.outbox import Outbox
from edge.pipeline import Pipeline, build_scene
from schemas.rollout import DesiredModel, chunk_hashes


def run(frames: list[np.ndarray], fps: float, threads: int, new_model: Path | None) -> tuple[list[float], tuple[int, int] | None, int]:
    """Per-frame times; the frame range the load ran over; frames processed."""
    config = camera_config(gate=False, threads=threads)
    switch = ModelSwitch(build_detector(config), probation_frames=30, max_slowdown=3.0)
    loading: list[int] = []
    current = [0]

    def load() -> None:
        loading.append(current[0])
        content = new_model.read_bytes()  # type: ignore[union-attr]
        sha = hashlib.sha256(content).hexdigest()
        desired = DesiredModel(rollout_id=1, issued_at_ms=0, version="swap-bench", name=config.model.name, sha256=sha,
                               size=len(content), chunk_size=len(content), chunk_sha256=chunk_hashes(content, len(content)))
        detector = build_detector(config, model_spec(config.model.name, new_model, sha, "swap-bench"))
        detector(np.zeros((416, 416, 3), np.uint8))
        switch.offer(detector, desired)
        loading.append(current[0])

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite3", config.camera_id, config.site)
        pipeline = Pipeline(config, switch.detector, build_scene(config), outbox, fps, switch=switch)
        loader = threading.Thread(target=load) if new_model else None
        ts = int(time.time() * 1000)
        for i, image in enumerate(frames):
            current[0] = i
            if loader is not None and i == len(frames) // 3:
                loader.start()
            started = time.perf_counter()
            pipeline.step(Frame(i, ts + int(i * 1000 / fps), i / fps, image))
            times.append(time.perf_counter() - started)
        if loader is not None:
            loader.join()
            assert pipeline.detector.spec.version == "swap-bench", "the new model was not swapped in"
        outbox.close()
    span = (loading[0], loading[1]) if len(loading) == 2 else None
    return times, span, len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    frames, fps = sample_frames()
    frames = frames[: args.frames]
    with tempfile.TemporaryDirectory() as tmp:
        new_model = Path(tmp) / "variant.onnx"
        doc = b"swap benchmark"
        new_model.write_bytes(model_spec().path.read_bytes() + bytes([0x32, len(doc)]) + doc)
        run(frames[:20], fps, args.threads, None)  # warm-up
        base, swap = [], []
        for _ in range(args.rounds):
            base.append(run(frames, fps, args.threads, None))
            swap.append(run(frames, fps, args.threads, new_model))
    base_median = statistics.median(statistics.median(t) for t, _, _ in base)
    base_worst = statistics.median(max(t) for t, _, _ in base)
    swap_median = statistics.median(statistics.median(t) for t, _, _ in swap)
    swap_worst = statistics.median(max(t) for t, _, _ in swap)
    during = statistics.median(statistics.median(t[a : b + 1]) for t, (a, b), _ in swap)  # type: ignore[misc]
    load_frames = statistics.median(b - a + 1 for _, (a, b), _ in swap)  # type: ignore[misc]
    print(f"{args.frames} frames of vtest.avi, {args.threads} onnxruntime thread(s), median of {args.rounds} rounds")
    print(f"frames processed: {statistics.median(n for _, _, n in swap)} with a rollout, {statistics.median(n for _, _, n in base)} without")
    print(f"median frame time: {swap_median * 1000:.1f} ms against {base_median * 1000:.1f} ms, ratio {swap_median / base_median:.2f}")
    print(f"worst frame time:  {swap_worst * 1000:.1f} ms against {base_worst * 1000:.1f} ms, ratio {swap_worst / base_worst:.2f}")
    print(f"while the new model loaded ({load_frames:.0f} frames): median {during * 1000:.1f} ms, ratio {during / base_median:.2f}")


if __name__ == "__main__":
    main()
