"""A clock a test moves by hand, for the pure parts that take one (``clock=``)."""

from __future__ import annotations


class FakeClock:
    """Returns ``now``; the test sets or advances it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
