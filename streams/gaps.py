"""Catch records the stream framework skipped, and read them ourselves.

Our events topic is neither compacted nor transactional, so its offsets run
without gaps. Seen with faust-streaming 0.15.3: around a rebalance, a worker
that took over a partition processed offsets ..660 and then 663.., while
661-662 reached no worker at all; Faust treats such a jump as a gap and
commits past it, and those events were lost. So each batch is checked
against the next offset the database says was applied (``streams.state``),
not against Faust's committed offset; the records in a jump are read
directly from Kafka and processed with the batch (processing is idempotent,
so reading a record twice is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    partition: int
    first: int  # first missing offset
    last: int  # last missing offset

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def find_gaps(partition: int, expected: int | None, offsets: list[int]) -> tuple[list[Gap], int | None]:
    """Jumps over unseen records in ``offsets`` (one partition, ascending), and the next expected offset.

    ``expected`` is the next offset not yet applied (None: nothing known).
    Offsets below it are redeliveries, never gaps.
    """
    gaps: list[Gap] = []
    for offset in offsets:
        if expected is not None and offset > expected:
            gaps.append(Gap(partition, expected, offset - 1))
        if expected is None or offset >= expected:
            expected = offset + 1
    return gaps, expected
