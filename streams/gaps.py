"""Catch records the stream framework skipped, and read them ourselves.

Our events topic is neither compacted nor transactional, so its offsets run
without gaps. Seen with faust-streaming 0.15.3: around a rebalance, a worker
that took over a partition processed offsets ..660 and then 663.., while
661-662 reached no worker at all; Faust treats such a jump as a gap and
commits past it, and those events were lost. So the worker checks every
batch against the offset it expects next per partition; the records in a
jump are read directly from Kafka and processed with the batch (processing
is idempotent, so reading a record twice is harmless).
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


class OffsetGuard:
    """Tracks the next expected offset of each partition this worker reads."""

    def __init__(self) -> None:
        self.expected: dict[int, int] = {}

    def forget(self, partitions: set[int]) -> None:
        """Partitions taken away: another worker goes on from there."""
        for p in partitions:
            self.expected.pop(p, None)

    def knows(self, partition: int) -> bool:
        return partition in self.expected

    def start(self, partition: int, offset: int) -> None:
        """Where reading a newly assigned partition starts (its committed offset)."""
        self.expected[partition] = offset

    def check(self, partition: int, offsets: list[int]) -> list[Gap]:
        """Offsets seen in a batch, in order: the jumps over unseen records."""
        gaps: list[Gap] = []
        expected = self.expected.get(partition)
        for offset in offsets:
            if expected is not None and offset > expected:
                gaps.append(Gap(partition, expected, offset - 1))
            if expected is None or offset >= expected:
                expected = offset + 1
        if expected is not None:
            self.expected[partition] = expected
        return gaps
