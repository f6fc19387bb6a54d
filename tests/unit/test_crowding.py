"""The crowding signal: which person boxes overlap another."""

from __future__ import annotations

import numpy as np

from edge.crowding import crowding, overlapping


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


def test_people_apart_do_not_overlap() -> None:
    assert overlapping(boxes()) == 0
    assert overlapping(boxes((0, 0, 10, 30))) == 0
    assert overlapping(boxes((0, 0, 10, 30), (20, 0, 30, 30), (10, 0, 20, 30))) == 0  # touching edges only


def test_a_person_half_behind_another_overlaps_and_so_does_the_one_in_front() -> None:
    assert overlapping(boxes((0, 0, 10, 30), (5, 0, 15, 30))) == 2


def test_a_small_box_inside_a_large_one_counts_for_both() -> None:
    # A child in front of an adult: the child's box is all under the adult's, the
    # adult's mostly uncovered; the pair still hide each other.
    assert overlapping(boxes((0, 0, 20, 60), (5, 30, 12, 50), (100, 0, 120, 60))) == 2


def test_a_sliver_of_overlap_is_not_crowding() -> None:
    # 1 px of 10 px wide boxes: a tenth of their area, under the fifth that counts.
    assert overlapping(boxes((0, 0, 10, 30), (9, 0, 19, 30))) == 0
    assert overlapping(boxes((0, 0, 10, 30), (8, 0, 18, 30))) == 2


def test_the_share_is_of_the_people_seen() -> None:
    assert crowding(35, 100) == 0.35
    assert crowding(0, 0) is None
