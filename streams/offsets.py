"""Which records of a partition a batch may apply, given the offset the database says comes next.

Our events topic is neither compacted nor transactional, so its offsets run
without gaps, and the worker applies each partition's records strictly in
offset order from the next offset the database holds (``streams.state``).
Faust is told that offset whenever it is given a partition
(``streams.worker``), so what it delivers starts there. What this guards
is the rest: a record below it is a redelivery (applied already: dropped
without being decoded), and a record past a missing offset is not applied
until the missing ones come (the worker seeks Faust back to them). Seen
with faust-streaming 0.15.3 before the worker positioned its partitions:
around a rebalance, a worker that took a partition over processed offsets
..660 and then 663.., and Faust committed past 661-662, which no worker
ever processed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    """The records of one partition that a batch applies."""

    offsets: list[int]  # ascending, contiguous from the expected offset, each once
    next_offset: int | None  # the partition's next offset once they are applied
    missing_from: int | None  # a jump: records past it were held back, Faust should resume here
    held: int  # records past the jump, not applied now (they come again)
    redelivered: int  # records below the expected offset, or repeated in the batch: dropped


def applicable(expected: int | None, offsets: list[int]) -> Run:
    """The run of ``offsets`` (one partition, any order, repeats allowed) that follows ``expected``.

    ``expected`` is the next offset not yet applied; None: nothing of the
    partition was ever applied, so the run starts at its smallest offset.
    """
    distinct = sorted(set(offsets))
    run: list[int] = []
    nxt = expected
    for i, offset in enumerate(distinct):
        if nxt is not None and offset < nxt:
            continue
        if nxt is not None and offset > nxt:
            held = len(distinct) - i
            return Run(run, nxt, nxt, held, len(offsets) - len(run) - held)
        run.append(offset)
        nxt = offset + 1
    return Run(run, nxt, None, 0, len(offsets) - len(run))
