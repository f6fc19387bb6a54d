"""Detector families: the registry, a file checked against its family, names old and new."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.config import ConfigError, load_camera_config
from edge.detector import Detector
from edge.families import Layout, family
from edge.model_spec import DEFAULT_MODEL, ModelError, architecture, model_spec


def test_the_shipped_model_is_nanodet_g_and_its_old_name_still_loads(caplog: pytest.LogCaptureFixture) -> None:
    spec = model_spec()
    assert (spec.name, spec.family, spec.version) == ("nanodet-g-416", "nanodet-g", "nanodet-g-416@2")
    with caplog.at_level(logging.WARNING):
        old = model_spec("nanodet-m-416")
    assert old.sha256 == spec.sha256 and old.name == "nanodet-g-416"
    assert "now nanodet-g-416" in caplog.text


def test_a_brought_architecture_needs_its_file() -> None:
    with pytest.raises(ModelError, match=r"not shipped: bring the file"):
        model_spec("nanodet-plus-m-416")
    spec = model_spec("yolox-nano-416", Path("/models/yolox.onnx"), "ab" * 32)
    assert (spec.family, spec.mean, spec.std, spec.pad) == ("yolox", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (114.0, 114.0, 114.0))
    assert spec.version == "yolox-nano-416@sha256:abababababab"


def test_publish_names_an_architecture_by_name_family_or_both() -> None:
    assert architecture() == DEFAULT_MODEL
    assert architecture(family="nanodet-plus") == "nanodet-plus-m-416"
    assert architecture("nanodet-m-416", "nanodet-g") == "nanodet-g-416"
    with pytest.raises(ModelError, match="is a yolox model, not nanodet-plus"):
        architecture("yolox-nano-416", "nanodet-plus")
    with pytest.raises(ModelError, match="unknown model family 'detr'"):
        architecture(family="detr")


def test_a_file_whose_outputs_are_not_its_familys_is_refused() -> None:
    shipped = model_spec()
    for name, expected in (("yolox-nano-416", r"one output 1x3549x85"), ("nanodet-plus-m-416", r"one output 1x3598x112")):
        with pytest.raises(ModelError, match=rf"is not a {model_spec(name, shipped.path, shipped.sha256).family} model .*{expected}"):
            Detector(model_spec(name, shipped.path, shipped.sha256))


def test_camera_files_name_a_known_model_and_bring_the_file_of_one_not_shipped(tmp_path: Path) -> None:
    def camera(model: str) -> Path:
        path = tmp_path / "cam.yaml"
        path.write_text(f"camera_id: cam-1\nsite: s\nsource: {{uri: video.avi}}\nmodel: {model}\n")
        return path

    with pytest.raises(ConfigError, match="unknown model 'yolo-v99'"):
        load_camera_config(camera("{name: yolo-v99}"))
    with pytest.raises(ConfigError, match="does not ship with FleetSight: give the file you bring as model.path"):
        load_camera_config(camera("{name: nanodet-plus-m-416}"))
    config = load_camera_config(camera(f"{{name: nanodet-plus-m-416, path: /m/p.onnx, sha256: {'a' * 64}}}"))
    assert config.model.name == "nanodet-plus-m-416"


@pytest.mark.parametrize(("name", "expected"), [
    # 960x540 (the shop front) into 416: the frame is 416x234.
    ("nanodet-g-416", Layout(416, 288, 416 / 960, 416 / 960, 0, 27, (416, 234))),  # the square letterbox's offsets kept
    ("nanodet-plus-m-416", Layout(416, 256, 416 / 960, 416 / 960, 0, 11, (416, 234))),  # the least padding, centred
    ("yolox-nano-416", Layout(416, 256, 416 / 960, 416 / 960, 0, 0, (416, 234))),  # top-left
])
def test_each_family_letterboxes_as_it_was_trained(name: str, expected: Layout) -> None:
    spec = model_spec(name, Path("/x.onnx"), "0" * 64)
    assert family(spec, free_shape=True, letterbox=True).layout(960, 540) == expected
    square = family(spec, free_shape=False, letterbox=True).layout(960, 540)
    assert (square.width, square.height) == (416, 416)


def test_yolox_decodes_a_cell_to_its_box() -> None:
    spec = model_spec("yolox-nano-416", Path("/x.onnx"), "0" * 64)
    yolox = family(spec, free_shape=False, letterbox=True)
    lay = yolox.layout(416, 416)
    out = np.zeros((1, 3549, 85), np.float32)
    # Stride 16 starts after the 52x52 cells of stride 8; its cell (x 3, y 2).
    cell = 52 * 52 + 2 * 26 + 3
    out[0, cell, :5] = [0.5, 0.25, np.log(2.0), np.log(4.0), 0.9]
    out[0, cell, 5] = 0.8  # person
    boxes, scores, classes = yolox.decode([out], lay, 0.5, np.ones(80, bool))
    # centre (3.5, 2.25) x 16 = (56, 36); size 32 x 64.
    np.testing.assert_allclose(boxes, [[40, 4, 72, 68]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)
    assert classes.tolist() == [0]
