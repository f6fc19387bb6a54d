"""Peak resident memory of a camera node against a bare onnxruntime process.

Run: .venv/bin/python -m bench.edge_memory [--frames 200]

Each side runs in a fresh process over the same frames of the sample video:
the bare side imports OpenCV and onnxruntime and runs the model; our side
runs the whole per-frame pipeline (detector, tracker, scene, SQLite
outbox). Peak RSS is the kernel's VmHWM at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMON = """
import sys, time, tempfile
from bench.common import sample_frames
frames, fps = sample_frames({frames})
"""

BARE = """
import cv2, numpy as np, onnxruntime as ort
from edge.model_spec import model_spec
spec = model_spec()
session = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
mean, inv = np.array(spec.mean, np.float32), 1 / np.array(spec.std, np.float32)
for image in frames:
    session.run(None, {name: ((cv2.resize(image, (416, 416)).astype(np.float32) - mean) * inv).transpose(2, 0, 1)[None]})
"""

OURS = """
from pathlib import Path
from bench.common import camera_config
from edge.capture import Frame
from edge.outbox import Outbox
from edge.detector import build_detector
from edge.pipeline import Pipeline, build_scene
config = camera_config(gate=False)
tmp = tempfile.mkdtemp()
pipeline = Pipeline(config, build_detector(config), build_scene(config), Outbox(Path(tmp) / "o.sqlite3", "cam-bench", "bench"), fps)
for i, image in enumerate(frames):
    pipeline.step(Frame(i, int(time.time() * 1000), i / fps, image))
"""

REPORT = """
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
frames_kb = sum(f.nbytes for f in frames) // 1024
print(int(peak) - frames_kb)
"""


def peak_kb(body: str, frames: int) -> int:
    code = textwrap.dedent(COMMON.format(frames=frames)) + textwrap.dedent(body) + textwrap.dedent(REPORT)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    bare = peak_kb(BARE, args.frames)
    ours = peak_kb(OURS, args.frames)
    print(f"peak RSS over {args.frames} frames, minus the decoded frames held in memory by the benchmark:")
    print(f"   bare onnxruntime process: {bare / 1024:6.0f} MiB")
    print(f"   FleetSight camera node:   {ours / 1024:6.0f} MiB")
    print(f"   ratio: {ours / bare:.2f}")


if __name__ == "__main__":
    main()
