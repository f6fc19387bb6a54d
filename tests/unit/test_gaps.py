"""Jumps in a partition's offsets are found, restarts and redeliveries are not jumps."""

from __future__ import annotations

from streams.gaps import Gap, find_gaps


def test_a_jump_is_reported_with_the_offset_expected_next() -> None:
    assert find_gaps(7, 328, [328, 329, 330]) == ([], 331)
    assert find_gaps(7, 331, list(range(331, 661)) + [663, 664]) == ([Gap(7, 661, 662)], 665)


def test_redelivered_offsets_are_not_gaps_and_do_not_move_back() -> None:
    assert find_gaps(1, 14, [11, 12, 13]) == ([], 14)
    assert find_gaps(1, 14, [12, 13, 14, 15]) == ([], 16)


def test_a_gap_right_after_a_takeover_is_caught() -> None:
    # The database says 100 is next; the new owner's first batch starts at 104.
    assert find_gaps(3, 100, [104, 105]) == ([Gap(3, 100, 103)], 106)


def test_nothing_known_means_no_gap() -> None:
    assert find_gaps(0, None, [5, 6]) == ([], 7)
    assert find_gaps(0, None, []) == ([], None)
