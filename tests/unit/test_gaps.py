"""Jumps in a partition's offsets are found, restarts and redeliveries are not jumps."""

from __future__ import annotations

from streams.gaps import Gap, OffsetGuard


def test_a_jump_is_reported_once() -> None:
    guard = OffsetGuard()
    guard.start(7, 328)
    assert guard.check(7, [328, 329, 330]) == []
    assert guard.check(7, list(range(331, 661)) + [663, 664]) == [Gap(7, 661, 662)]
    assert guard.check(7, [665]) == []


def test_redelivered_offsets_are_not_gaps_and_do_not_move_back() -> None:
    guard = OffsetGuard()
    guard.start(1, 10)
    guard.check(1, [10, 11, 12])
    assert guard.check(1, [11, 12, 13]) == []
    assert guard.expected[1] == 14


def test_a_gap_right_after_assignment_is_caught_and_revocation_forgets() -> None:
    guard = OffsetGuard()
    guard.start(3, 100)
    assert guard.check(3, [104, 105]) == [Gap(3, 100, 103)]
    guard.forget({3})
    assert not guard.knows(3)
