"""The run of a partition's records that a batch may apply."""

from __future__ import annotations

from streams.offsets import Run, applicable


def test_contiguous_records_from_the_expected_offset_are_applied() -> None:
    assert applicable(328, [328, 329, 330]) == Run([328, 329, 330], 331, None, 0, 0)


def test_redeliveries_below_the_expected_offset_are_dropped() -> None:
    assert applicable(14, [11, 12, 13]) == Run([], 14, None, 0, 3)
    assert applicable(14, [12, 13, 14, 15]) == Run([14, 15], 16, None, 0, 2)


def test_records_past_a_jump_wait_for_the_missing_ones() -> None:
    # 661-662 never delivered: apply up to 660, resume at 661.
    run = applicable(331, list(range(331, 661)) + [663, 664])
    assert (run.offsets[-1], run.next_offset, run.missing_from, run.held, run.redelivered) == (660, 661, 661, 2, 0)
    assert applicable(100, [104, 105]) == Run([], 100, 100, 2, 0)


def test_a_batch_that_holds_records_twice_or_out_of_order() -> None:
    # After a seek back, buffered records can come again, and before the refetched ones.
    assert applicable(7, [9, 10, 7, 8, 9, 10]) == Run([7, 8, 9, 10], 11, None, 0, 2)


def test_nothing_applied_yet_starts_at_the_first_record() -> None:
    assert applicable(None, [5, 6]) == Run([5, 6], 7, None, 0, 0)
    assert applicable(None, []) == Run([], None, None, 0, 0)
