"""Write the int8 copy of the shipped NanoDet-g (``model.name: nanodet-g-416-int8``).

    .venv/bin/pip install onnx          # only here, never at run time
    .venv/bin/python scripts/quantize_nanodet.py edge/models/nanodet-g-416.onnx edge/models/nanodet-g-416-int8.onnx

onnxruntime's static quantization, QOperator format, uint8 activations and
int8 weights per output channel with ``reduce_range`` (7-bit weights):

- int8 weights let x86 use its u8 x s8 multiply-add; on AVX2 without VNNI
  that instruction adds pairs into 16 bits and saturates with 8-bit weights
  (a QDQ copy with them found 3 people where there were 25). 7-bit weights
  cannot saturate it, so a box with VNNI and one without compute the same.
- Per channel, as onnxruntime's documentation advises with 7-bit weights:
  one scale a tensor is coarse for its small channels.
- QOperator: the same settings as QDQ ran slower than the float model here
  and found nobody (onnxruntime 1.32).

Calibrated on pictures that are in no evaluation clip: the photos of
Debian's ``darknet`` (public domain) and ``opencv-doc`` (Apache-2.0 / BSD-3
sample data) packages, each also at a third of its light (dusk and night
are in the accuracy suite), and every 40th frame of opencv-doc's
``Megamind.avi``, through the detector's own preprocessing. The packages
are downloaded with apt into a temporary folder, as scripts/fetch-media.sh
does. Each picture is cut to its middle 4:3 at 640x480, as a camera frame.
Nine of the 34 convolutions stay float (``float_convs``: the heads, the one
before each, the neck's three): all quantized, the model found more people
than there were on the sunlit square (occupancy 16-23 % off at 10 fps,
against 6 % for the float model); heads float alone did not change that;
with the neck float too it counts as the float model does there, for 0.3 ms
more an inference. Tried and not kept: the first convolution float as well
(17.3 ms against 10.8, no count better); histogram calibrations (Percentile,
Entropy: onnxruntime finds an infinite range in this graph).

What it costs in counts, on the whole accuracy suite, is in BENCHMARKS.md
("Edge capacity"): faster by 2.2x an inference on a CPU with VNNI, but at
the default confidence it counts more people than there are on the sunlit
square, and at a higher one it misses walkers at night at 5 fps. So it is
shipped for boxes that need the cameras more than those figures, not as
the default.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPENCV_PHOTOS = ("basketball1.png", "basketball2.png", "messi5.jpg", "home.jpg", "building.jpg", "fruits.jpg", "aero1.jpg",
                 "baboon.jpg", "lena.jpg", "board.jpg", "orange.jpg")
DIM = 0.35  # a third of the light
VIDEO_EVERY = 40


def calibration_pictures(work: Path) -> tuple[list[Path], Path]:
    """The photos and the clip, from Debian's darknet and opencv-doc packages."""
    work.chmod(0o777)  # apt's sandbox user writes the downloads
    subprocess.run(["apt-get", "download", "opencv-doc", "darknet"], cwd=work, check=True, capture_output=True)
    for deb in work.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(work / "x")], check=True)
    data = work / "x" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data"
    photos = sorted((work / "x" / "usr" / "share" / "darknet" / "data").glob("*.jpg")) + [data / name for name in OPENCV_PHOTOS]
    return [p for p in photos if p.is_file()], data / "Megamind.avi"


def as_camera_frame(image: np.ndarray) -> np.ndarray:
    """The middle 4:3 of a picture at 640x480: every blob has one shape, as a camera's would
    (the histogram calibrations need it)."""
    import cv2

    h, w = image.shape[:2]
    cw, ch = min(w, h * 4 // 3), min(h, w * 3 // 4)
    x, y = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(image[y:y + ch, x:x + cw], (640, 480), interpolation=cv2.INTER_AREA)


def float_convs(model_path: Path) -> list[str]:
    """The convolutions that stay float: each output's (class scores and box distributions per stride),
    the one before it, and the neck's (those whose outputs are resized or added across scales)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def conv_above(node):  # the nearest convolution up the first inputs
        while node is not None and node.op_type != "Conv":
            node = producer.get(node.input[0])
        return node

    kept = set()
    for output in graph.output:
        head = conv_above(producer.get(output.name))
        if head is not None:
            kept.add(head.name)
            before = conv_above(producer.get(head.input[0]))
            if before is not None:
                kept.add(before.name)
    for node in graph.node:
        if node.op_type == "Conv" and any(c.op_type in ("Resize", "Add") for c in consumers.get(node.output[0], [])):
            kept.add(node.name)
    return sorted(kept)


def quantize(source: Path, out: Path) -> None:
    import cv2
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge.detector import Detector
    from edge.model_spec import model_spec

    detector = Detector(model_spec(path=source, sha256=hashlib.sha256(source.read_bytes()).hexdigest()))
    with tempfile.TemporaryDirectory() as tmp:
        photos, clip = calibration_pictures(Path(tmp))
        blobs = []
        for photo in photos:
            image = as_camera_frame(cv2.imread(str(photo)))
            blobs += [detector.preprocess(image)[0], detector.preprocess((image * DIM).astype(np.uint8))[0]]
        cap = cv2.VideoCapture(str(clip))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % VIDEO_EVERY == 0:
                blobs.append(detector.preprocess(as_camera_frame(frame))[0])
            index += 1
        cap.release()
        print(f"calibrating on {len(blobs)} pictures ({len(photos)} photos, twice; {index} frames of {clip.name}, every {VIDEO_EVERY}th)")

        class Pictures(CalibrationDataReader):
            def __init__(self) -> None:
                self.feeds = iter([{detector.input_name: b} for b in blobs])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.feeds, None)

        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), Pictures(), quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=float_convs(prepared),
            calibrate_method=CalibrationMethod.MinMax,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the float model (edge/models/nanodet-g-416.onnx)")
    parser.add_argument("out", type=Path, help="where the int8 copy goes")
    args = parser.parse_args()
    quantize(args.model, args.out)
    print(f"{args.out}: sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
