"""Make an ONNX detector take any input height, width and batch.

    .venv/bin/pip install onnx          # only here, never at run time
    .venv/bin/python scripts/free_shape.py edge/models/nanodet-g-416.onnx
    .venv/bin/python scripts/free_shape.py my-yolox-nano.onnx     # a YOLOX export made without --dynamic

``scripts/convert_nanodet.py`` gives a graph fixed at 1x3x416x416, and
YOLOX's published ONNX files are fixed at 1x3x416x416 too, though both
networks are fully convolutional: their Reshapes flatten with ``-1`` and
NanoDet's Resizes scale by 2 and 0.5. Naming the input's batch, height and
width ``batch``/``height``/``width`` and letting each Reshape copy the batch
(``0``) instead of pinning it at ``1`` is all it takes; on a square 416
input the outputs are those of the fixed graph (NanoDet-g: largest
difference 2e-6; YOLOX-Nano: identical). ``edge.families`` then letterboxes
a 4:3 frame to 416x352 and a 16:9 one to 416x256 instead of 416x416 (see
``edge.families.Family.layout``). The file's sha256 changes: publish or configure the new
one.

The int8 copy of the shipped model is made from the result by
``scripts/quantize_nanodet.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="rewritten in place")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "free.onnx"
        free_shape(args.model, out)
        args.model.write_bytes(out.read_bytes())
    print(f"{args.model}: sha256 {hashlib.sha256(args.model.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
