"""The accuracy tooling itself: reading annotations, mirroring, the CLI's answers to bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.accuracy import AnnotationError, Box, Counts, RateResult, load_annotation, mirror_config
from edge.config import CameraConfig, LineConfig, SourceConfig, ZoneConfig
from fleetsight.cli import main


def test_reads_motchallenge_frames_from_one(tmp_path: Path) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("1,9,499,158,31,75,1,-4.1,-7.3,0\n2,9,497,158,31,75,0,-4.1,-7.3,0\n")
    assert load_annotation(gt) == {0: [Box(9, 499, 158, 31, 75)], 1: [Box(9, 497, 158, 31, 75)]}


@pytest.mark.parametrize(("text", "says"), [("1,2,3\n", "at least 6 columns"), ("a,b,c,d,e,f\n", "comma-separated"), ("0,1,1,1,1,1\n", "start at 1")])
def test_bad_annotations_are_refused_with_the_reason(tmp_path: Path, text: str, says: str) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text(text)
    with pytest.raises(AnnotationError, match=says):
        load_annotation(gt)


def test_cli_answers_a_missing_annotation_with_exit_2(tmp_path: Path, caplog) -> None:
    config = tmp_path / "cam.yaml"
    config.write_text("camera_id: c1\nsite: s1\nsource: {uri: clip.avi}\n")
    assert main(["edge", "eval", "--config", str(config), "--annotation", str(tmp_path / "none.txt")]) == 2
    assert "no such annotation file" in caplog.text


def test_mirroring_flips_every_x() -> None:
    config = CameraConfig(
        camera_id="c1", site="s1", source=SourceConfig(uri="x.avi"),
        lines=[LineConfig(name="l", points=((0.2, 0.1), (0.3, 0.9)))],
        zones=[ZoneConfig(name="z", polygon=[(0.0, 0.0), (0.25, 0.0), (0.25, 1.0)])],
    )
    flipped = mirror_config(config)
    assert flipped.lines[0].points == ((0.8, 0.1), (0.7, 0.9))
    assert flipped.zones[0].polygon == [(1.0, 0.0), (0.75, 0.0), (0.75, 1.0)]
    assert Box(1, 10, 5, 30, 70).mirrored(768) == Box(1, 728, 5, 30, 70)


def test_errors_are_summed_per_key_over_the_truth() -> None:
    truth = Counts(crossings={("a", "in"): 10, ("a", "out"): 10})  # type: ignore[arg-type]
    counted = Counts(crossings={("a", "in"): 12, ("a", "out"): 9, ("b", "in"): 1})  # type: ignore[arg-type]
    r = RateResult("x", 1, 10.0, truth, counted, 19, {}, 0)
    assert r.crossing_error == pytest.approx(4 / 20)


def test_rates_are_named_in_words() -> None:
    from edge.accuracy import every_nth

    assert [every_nth(n) for n in (1, 2, 3, 4, 11, 21)] == [
        "every frame", "every 2nd frame", "every 3rd frame", "every 4th frame", "every 11th frame", "every 21st frame",
    ]


def test_mot16_rows_other_than_pedestrians_are_ignore_regions(tmp_path: Path) -> None:
    from edge.accuracy import identities

    gt = tmp_path / "gt.txt"
    # a pedestrian, a distractor (8), an occluder (9), a reflection (12)
    gt.write_text("1,1,10,10,20,50,1,1,1.0\n1,2,40,10,20,50,0,8,1.0\n1,3,70,10,20,50,0,9,0.5\n1,4,99,10,20,50,0,12,1.0\n")
    boxes = load_annotation(gt)[0]
    assert [b.counted for b in boxes] == [True, False, False, False]
    assert identities({0: boxes}) == 1


def test_conditions_are_deterministic_and_keep_the_geometry() -> None:
    import numpy as np

    from edge.conditions import CONDITIONS, condition

    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for c in CONDITIONS.values():
        out = c.apply(image, 7)
        assert np.array_equal(out, c.apply(image, 7)), c.name
        assert out.shape == (round(120 * c.scale), round(160 * c.scale), 3)
    dusk = condition("dusk").apply(image, 7)
    assert dusk.mean() < image.mean() / 2.5
    night = condition("night").apply(image, 7)
    assert np.array_equal(night[..., 0], night[..., 1])  # no colour
    with pytest.raises(ValueError, match="known: daylight"):
        condition("fog")


def test_cli_refuses_an_unknown_condition(tmp_path: Path, caplog) -> None:
    config = tmp_path / "cam.yaml"
    config.write_text("camera_id: c1\nsite: s1\nsource: {uri: clip.avi}\n")
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,50,1,-1,-1,-1\n")
    assert main(["edge", "eval", "--config", str(config), "--annotation", str(gt), "--condition", "fog"]) == 2
    assert "unknown condition 'fog'" in caplog.text
