"""Make the shipped NanoDet-m take any input height, width and batch.

    .venv/bin/pip install onnx          # only here, never at run time
    .venv/bin/python scripts/free_shape_nanodet.py edge/models/nanodet-m-416.onnx [--int8 out.onnx]

``scripts/convert_nanodet.py`` gives a graph fixed at 1x3x416x416, though
the network is fully convolutional: its Reshapes flatten with ``-1`` and its
Resizes scale by 2 and 0.5. Naming the input's batch, height and width
``batch``/``height``/``width`` and letting each Reshape copy the batch
(``0``) instead of pinning it at ``1`` is all it takes; on a square 416
input the outputs are those of the fixed graph (largest difference 2e-6).
``edge.detector`` then letterboxes a 4:3 frame to 416x352 instead of
416x416 (see ``Detector.layout``).

``--int8`` also writes a statically quantized copy (onnxruntime's
quantization, QOperator, uint8 weights and activations, per tensor),
calibrated on 50 frames of the sample clip through the detector's own
preprocessing. uint8 weights because this box's CPU has AVX2 and no VNNI:
int8 weights with uint8 activations (onnxruntime's default, QDQ, per
channel) saturate there and the model found 3 people where there were 25.
Whether it ships as the default is the accuracy benchmark's call
(BENCHMARKS.md, "Edge capacity").
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_shape(source: Path, out: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width")):
        if name:
            dim.dim_param = name
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        out_dims[0].dim_param, out_dims[1].dim_param = "batch", f"cells_{len(out_dims)}_{output.name}"
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            shape = numpy_helper.to_array(initializers[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0  # copy the batch through
                initializers[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del model.graph.value_info[:]  # shapes inferred for 416x416 no longer hold
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def quantize(source: Path, out: Path) -> None:
    import cv2
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge.detector import Detector, model_spec

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    detector = Detector(model_spec(path=source, sha256=digest))
    video = ROOT / ".services" / "media" / "vtest.avi"
    cap = cv2.VideoCapture(str(video))
    blobs = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 16 == 0:
            blobs.append(detector.preprocess(frame)[0])
        index += 1
    cap.release()
    if not blobs:
        raise SystemExit(f"no frames in {video}; run `make demo` or scripts/fetch-media.sh first")

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{detector.input_name: b} for b in blobs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), Frames(), quant_format=QuantFormat.QOperator, per_channel=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="rewritten in place")
    parser.add_argument("--int8", type=Path, help="also write a quantized copy here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "free.onnx"
        free_shape(args.model, out)
        args.model.write_bytes(out.read_bytes())
    print(f"{args.model}: sha256 {hashlib.sha256(args.model.read_bytes()).hexdigest()}")
    if args.int8:
        quantize(args.model, args.int8)
        print(f"{args.int8}: sha256 {hashlib.sha256(args.int8.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
