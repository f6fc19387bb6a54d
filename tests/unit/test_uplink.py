"""The camera's resend timer: a standing link is not flooded with the same tail again and again."""

from __future__ import annotations

from edge.uplink import ResendTimer
from tests.support.clock import FakeClock


def test_resends_back_off_while_nothing_moves_and_reset_when_the_watermark_does() -> None:
    clock = FakeClock(100.0)
    timer = ResendTimer(10, 160, clock=clock)
    resends = []
    for _ in range(600):  # ten minutes with no confirmation at all
        clock.now += 1
        if timer.due():
            resends.append(clock.now - 100)
            timer.resent()
    # 11, 32, 73, 154, 315, 476: not 54 resends of a fixed 10 s timer
    assert resends == [11, 32, 73, 154, 315, 476]
    timer.progress()  # the bridge caught up: the next silence is judged at the first interval again
    clock.now += 10
    assert not timer.due()
    clock.now += 1
    assert timer.due()


def test_a_silence_counts_from_when_something_is_outstanding() -> None:
    clock = FakeClock(100.0)
    timer = ResendTimer(10, 160, clock=clock)
    clock.now += 500  # idle: nothing was outstanding
    timer.restart()  # now events go out
    clock.now += 5
    assert not timer.due()
