"""The stall watchdog: waiting work without progress is a stall; idling is not; a blocked loop is."""

from __future__ import annotations

import asyncio
import threading

from runtime.watchdog import STALL_EXIT, Watchdog
from tests.support.clock import FakeClock


def test_waiting_work_without_progress_is_a_stall_and_progress_clears_it() -> None:
    clock, waiting = FakeClock(), [0]
    dog = Watchdog("worker", 60, waiting=lambda: waiting[0], clock=clock)
    clock.now += 500
    assert dog.check().ok  # idle for long: nothing waits, no stall
    waiting[0] = 40
    clock.now += 29
    assert dog.check().ok and dog.health().ok
    clock.now += 2
    assert dog.check().ok and not dog.health().ok  # /health warns from half the timeout
    dog.progress()
    clock.now += 59
    assert dog.check().ok
    dog.busy("reading skipped offsets 394-455 of partition 3")
    clock.now += 2
    health = dog.check()
    assert not health.ok
    assert "no progress for 61 s with 40 waiting" in health.reason
    assert health.doing == "reading skipped offsets 394-455 of partition 3"


def test_a_reported_fault_holds_the_clock_while_it_keeps_being_reported() -> None:
    clock, waiting = FakeClock(), [10]
    dog = Watchdog("bridge", 60, waiting=lambda: waiting[0], clock=clock)
    for _ in range(10):  # Kafka says "not enough replicas" for 10 minutes: waiting, not hung
        clock.now += 55
        dog.fault("waiting for Kafka: NotEnoughReplicasError")
        assert dog.check().ok
    clock.now += 61  # then silence: a hang after all
    health = dog.check()
    assert not health.ok and health.doing == "waiting for Kafka: NotEnoughReplicasError"


def test_a_broken_waiting_probe_counts_as_nothing_waiting() -> None:
    def broken() -> int:
        raise RuntimeError("probe")

    clock = FakeClock()
    dog = Watchdog("sink", 5, waiting=broken, clock=clock)
    clock.now += 100
    assert dog.check().ok


def test_the_thread_exits_the_process_when_the_event_loop_is_blocked() -> None:
    exited: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        done.set()

    loop = asyncio.new_event_loop()
    dog = Watchdog("bridge", 2, waiting=lambda: 0, exit=fake_exit)
    try:
        dog.start(loop)
        # The loop turns for a moment (the heartbeat runs), then blocks in plain code.
        loop.run_until_complete(asyncio.sleep(0.1))
        assert done.wait(10), "watchdog did not fire"
    finally:
        dog.stop()
        loop.close()
    assert exited == [STALL_EXIT]
