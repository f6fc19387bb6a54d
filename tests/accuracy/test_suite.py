"""The edge's counts against hand-made ground truth, on the whole suite: both
annotated scenes (PETS09-S2L1, a square from high up; MOT16-09, a shop front
from hip height), every picture condition (daylight, dusk, night, compressed,
half resolution), at 10 and 5 detections a second, for every detector family:
the shipped NanoDet-g and the NanoDet-Plus and YOLOX files a user brings
(read from ``../shared/models/``; skipped, saying why, where absent), each at
its family's thresholds (``edge/models/models.json``).

Deterministic for the pinned model and the clips' frames (the conditions'
noise is seeded per frame), so the targets are asserted. Where a target is
not met, ``SHORT_OF_TARGET`` records by how much (README, "How accurate are
the counts"): there the test holds the measured figure, so that it cannot
get worse unseen, and the target stays the target.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.accuracy_suite import EVAL_DIR, run_suite, scenes
from devtools.model_files import missing as missing_models
from devtools.model_files import model_settings
from edge.accuracy import RateResult, evaluate, evaluate_rates, load_annotation, rate_invariance
from edge.conditions import CONDITIONS
from edge.config import load_camera_config
from edge.crowding import CROWDED
from edge.model_spec import DEFAULT_MODEL

CROSSING_TARGET = 0.10  # summed error per line and direction, every scene, condition and rate
TRACKS_TARGET = 1.3  # tracks started per annotated person
RATE_TARGET = 0.10  # 5 fps counts within this of 10 fps
ZONE_TARGET = 0.15  # zone entries and exits on the square
OCCUPANCY_TARGET = 0.10  # mean occupancy per zone and minute on the square

SHOP_FRONT = "mot16-09"
SQUARE = "pets09-s2l1"

# Per family: (scene, condition) -> the figures measured where a target is
# not met (README, "How accurate are the counts" and "Which detector for
# which camera"). The test holds the measured figure, so that it cannot get
# worse unseen, and the target stays the target.
SHORT_OF_TARGET: dict[str, dict[tuple[str, str], dict[str, float]]] = {
    "nanodet-g-416": {
        # Groups of people walking close together past a low camera: the detector
        # finds 53-59 % of the people's boxes, and one box stands for several.
        # Measured: crossings 42-67 % off, 5 fps 20-44 % from 10 fps.
        **{(SHOP_FRONT, c): {"crossings": 0.75, "rate": 0.50} for c in CONDITIONS},
        # Tracks: 1.21-1.47x on the square (a track lost and started anew), most in
        # the poorer pictures at 5 fps.
        **{(SQUARE, c): {"tracks": 1.5} for c in CONDITIONS},
        # At night the 5 fps run misses a few more walkers than the 10 fps one
        # (detector recall 0.83 against 0.88): 11.1 % apart.
        (SQUARE, "night"): {"tracks": 1.5, "rate": 0.12},
        # Heavy compression costs occupancy (21.8 %): boxes come out looser.
        (SQUARE, "compressed"): {"tracks": 1.5, "occupancy": 0.25},
    },
    "nanodet-plus-m-416": {
        # Measured: crossings 32-66 % off, 5 fps 33-47 % from 10 fps.
        **{(SHOP_FRONT, c): {"crossings": 0.70, "rate": 0.50} for c in CONDITIONS},
        **{(SQUARE, c): {"tracks": 1.5} for c in CONDITIONS},
        # At night at 5 fps it loses more walkers than NanoDet-g: 14.2 % off,
        # 17.5 % from 10 fps (no threshold tried, 0.35-0.45, brought it under 12 %).
        (SQUARE, "night"): {"tracks": 1.5, "crossings": 0.15, "rate": 0.18},
    },
    "yolox-nano-416": {
        # Measured: crossings 28-60 % off, 5 fps 32-46 % from 10 fps.
        **{(SHOP_FRONT, c): {"crossings": 0.65, "rate": 0.50} for c in CONDITIONS},
        **{(SQUARE, c): {"tracks": 1.5} for c in CONDITIONS},
        # Heavy compression: 10.1 % off and 1.53x tracks at 10 fps.
        (SQUARE, "compressed"): {"tracks": 1.6, "crossings": 0.11},
        (SQUARE, "night"): {"tracks": 1.5, "occupancy": 0.11},
    },
}
FAMILIES = list(SHORT_OF_TARGET)

SCENES = scenes()
# The annotated data lies in ../shared/eval; vtest.avi is fetched by the
# `media` fixture (a clean clone has none yet when tests are collected).
missing = [p for s in SCENES for p in s.missing() if EVAL_DIR in p.parents]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"accuracy suite data not found: {missing} (see ../shared/eval)")


def limit(model: str, scene: str, condition: str, what: str, target: float) -> float:
    return SHORT_OF_TARGET[model].get((scene, condition), {}).get(what, target)


@pytest.fixture(scope="module")
def suites(media: Path) -> dict[str, dict[tuple[str, str, float], RateResult]]:
    return {}


@pytest.fixture(params=FAMILIES)
def model(request: pytest.FixtureRequest) -> str:
    """Each family's architecture; a brought one is skipped, saying why, where its file is absent."""
    absent = missing_models([request.param])
    if absent:
        pytest.skip(f"{absent[0]} not found: a brought model (see ../shared/models/README.md)")
    return str(request.param)


def run_once(suites: dict, model: str) -> dict[tuple[str, str, float], RateResult]:
    if model not in suites:
        suites[model] = {(r.scene, r.condition, r.fps): r for r in run_suite(SCENES, settings=model_settings(model))}
    return suites[model]


@pytest.fixture
def suite(suites: dict, model: str) -> dict[tuple[str, str, float], RateResult]:
    """The whole suite with ``model``, run once per family."""
    return run_once(suites, model)


@pytest.fixture
def shipped(suites: dict) -> dict[tuple[str, str, float], RateResult]:
    """The whole suite with the shipped model (the camera files' default)."""
    return run_once(suites, DEFAULT_MODEL)


CASES = [(s.name, c) for s in SCENES for c in CONDITIONS]


def test_every_scene_condition_and_rate_was_run(suite) -> None:
    assert {(s, c) for s, c, _ in suite} == set(CASES)
    assert {fps for *_, fps in suite} == {10.0, 5.0}


@pytest.mark.parametrize(("scene", "condition"), CASES)
@pytest.mark.parametrize("fps", [10.0, 5.0])
def test_line_crossings(suite, model: str, scene: str, condition: str, fps: float) -> None:
    r = suite[(scene, condition, fps)]
    assert sum(r.truth.crossings.values()) > 60  # at least 8 lines, both directions
    assert r.crossing_error <= limit(model, scene, condition, "crossings", CROSSING_TARGET), r.counted.crossings


@pytest.mark.parametrize(("scene", "condition"), CASES)
@pytest.mark.parametrize("fps", [10.0, 5.0])
def test_tracks_are_close_to_the_people_there_were(suite, model: str, scene: str, condition: str, fps: float) -> None:
    r = suite[(scene, condition, fps)]
    assert r.identities == {SQUARE: 19, SHOP_FRONT: 25}[scene]  # pedestrians only, no reflections
    assert r.counted.tracks <= limit(model, scene, condition, "tracks", TRACKS_TARGET) * r.identities


@pytest.mark.parametrize(("scene", "condition"), CASES)
def test_counts_do_not_depend_on_the_detection_rate(suite, model: str, scene: str, condition: str) -> None:
    assert rate_invariance(suite[(scene, condition, 10.0)], suite[(scene, condition, 5.0)]) <= limit(model, scene, condition, "rate", RATE_TARGET)


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_the_square_keeps_zone_entries_and_occupancy_in_any_light(suite, model: str, condition: str) -> None:
    for fps in (10.0, 5.0):
        r = suite[(SQUARE, condition, fps)]
        assert r.entry_error <= ZONE_TARGET and r.exit_error <= ZONE_TARGET
        assert r.occupancy_error <= limit(model, SQUARE, condition, "occupancy", OCCUPANCY_TARGET), (r.truth.occupancy, r.counted.occupancy)


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_the_crowding_signal_tells_the_shop_front_from_the_square(suite, model: str, condition: str) -> None:
    # edge/crowding.py: above CROWDED people hide each other and counts run low.
    for fps in (10.0, 5.0):
        square, shop = suite[(SQUARE, condition, fps)].crowding, suite[(SHOP_FRONT, condition, fps)].crowding
        assert square is not None and shop is not None
        assert square < 0.8 * CROWDED < CROWDED < shop, (square, shop)  # the square is under where a crowded alert closes


def test_the_truth_does_not_depend_on_the_rate_or_the_light(suite) -> None:
    for scene in (SQUARE, SHOP_FRONT):
        base = suite[(scene, "daylight", 10.0)].truth
        assert all(suite[(scene, c, fps)].truth.crossings == base.crossings for c in CONDITIONS for fps in (10.0, 5.0))


def test_a_camera_set_to_detect_at_5_fps_counts_as_the_5_fps_run(shipped, media: Path) -> None:
    spec = SCENES[0]
    config = load_camera_config(spec.config)
    config.detect.fps = 5.0
    r = evaluate(config, spec.video, load_annotation(spec.annotation))
    assert r.detector_runs <= 400  # 795 frames at 10 fps: every 2nd
    assert r.crossing_error <= CROSSING_TARGET
    assert rate_invariance(shipped[(SQUARE, "daylight", 5.0)], r) <= 0.05


def test_a_mirrored_square_counts_as_the_square(shipped) -> None:
    # The same clip in a mirror: lines and zones flip with it, nothing else may change much.
    spec = SCENES[0]
    mirrored = evaluate_rates(load_camera_config(spec.config), spec.video, load_annotation(spec.annotation), strides=(1, 2), mirror=True)
    assert rate_invariance(mirrored[0], mirrored[1]) <= RATE_TARGET
    assert all(r.crossing_error <= CROSSING_TARGET for r in mirrored)
    assert mirrored[0].truth.entries == shipped[(SQUARE, "daylight", 10.0)].truth.entries  # a mirror changes no zone's visitors
