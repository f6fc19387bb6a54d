"""The edge's counts against hand-made ground truth: PETS 2009 S2.L1 (vtest.avi).

Deterministic for the pinned model and the clip's frames; the targets are
those of the accuracy issue (see README "How accurate are the counts").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.accuracy import RateResult, evaluate, load_annotation, rate_invariance
from edge.config import load_camera_config
from runtime.settings import REPO_ROOT

ANNOTATION = REPO_ROOT.parent / "shared" / "eval" / "pets09-s2l1" / "gt.txt"
CONFIG = REPO_ROOT / "bench" / "pets09-s2l1.yaml"

pytestmark = pytest.mark.skipif(
    not ANNOTATION.is_file(), reason=f"PETS09-S2L1 annotation not found at {ANNOTATION} (see shared/eval)"
)


@pytest.fixture(scope="module")
def results(media: Path) -> dict[tuple[int, bool], RateResult]:
    config = load_camera_config(CONFIG)
    annotation = load_annotation(ANNOTATION)
    return {
        (every, mirror): evaluate(config, media / "vtest.avi", annotation, stride=every, mirror=mirror)
        for every, mirror in ((1, False), (2, False), (1, True), (2, True))
    }


@pytest.mark.parametrize(("every", "limit"), [(1, 0.10), (2, 0.15)])
def test_line_crossings_per_line_and_direction(results, every: int, limit: float) -> None:
    r = results[(every, False)]
    assert sum(r.truth.crossings.values()) > 100  # 9 lines, both directions
    assert r.crossing_error <= limit, r.counted.crossings


@pytest.mark.parametrize("every", [1, 2])
def test_zone_entries_and_mean_occupancy(results, every: int) -> None:
    r = results[(every, False)]
    assert r.entry_error <= 0.15 and r.exit_error <= 0.15
    assert r.occupancy_error <= 0.10, (r.truth.occupancy, r.counted.occupancy)


@pytest.mark.parametrize("every", [1, 2])
def test_objects_are_close_to_the_people_there_were(results, every: int) -> None:
    r = results[(every, False)]
    assert r.identities == 19
    assert r.counted.tracks <= 1.5 * r.identities


@pytest.mark.parametrize("mirror", [False, True])
def test_counts_do_not_depend_on_the_detection_rate(results, mirror: bool) -> None:
    assert rate_invariance(results[(1, mirror)], results[(2, mirror)]) <= 0.10


def test_the_truth_does_not_depend_on_the_rate_measured(results) -> None:
    assert results[(1, False)].truth == results[(2, False)].truth
    assert results[(1, True)].truth.entries == results[(1, False)].truth.entries  # a mirror changes no zone's visitors


def test_a_camera_set_to_detect_at_5_fps_counts_as_the_5_fps_run(results, media: Path) -> None:
    config = load_camera_config(CONFIG)
    config.detect.fps = 5.0
    r = evaluate(config, media / "vtest.avi", load_annotation(ANNOTATION))
    assert r.detector_runs <= 400  # 795 frames at 10 fps: every 2nd
    assert r.crossing_error <= 0.15
    assert rate_invariance(results[(2, False)], r) <= 0.05
