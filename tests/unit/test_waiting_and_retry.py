"""The one poll loop and the one backoff policy (runtime/waiting.py, runtime/retry.py)."""

from __future__ import annotations

import itertools
import logging

import pytest

from runtime.retry import delays, retry
from runtime.waiting import WaitAborted, WaitTimeout, every, wait_for, wait_until


def test_wait_until_returns_the_first_truthy_value_and_names_what_timed_out() -> None:
    values = iter([0, None, 7])
    assert wait_until(lambda: next(values), 5, "seven", interval=0.001) == 7
    with pytest.raises(WaitTimeout, match="waiting for the impossible; last value: False"):
        wait_until(lambda: False, 0.05, "the impossible", interval=0.01)
    with pytest.raises(WaitAborted, match="gave up"):
        wait_until(lambda: False, 5, "x", interval=0.001, abort=lambda: "gave up")


async def test_wait_for_takes_plain_and_async_checks() -> None:
    calls = itertools.count()

    async def third() -> bool:
        return next(calls) >= 2

    assert await wait_for(third, 5, "the third call", interval=0.001)
    assert await wait_for(lambda: "yes", 5, "a plain check") == "yes"
    with pytest.raises(WaitTimeout):
        await wait_for(lambda: 0, 0.05, "zero to become true", interval=0.01)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(itertools.islice(delays(0.5, 3.0), 5)) == [0.5, 1.0, 2.0, 3.0, 3.0]
    # With jitter each delay is shortened by up to that share, never lengthened, and they differ.
    jittered = [list(itertools.islice(delays(0.2, 2.0, jitter=0.5), 6)) for _ in range(20)]
    for run in jittered:
        assert all(0.5 * d <= j <= d for j, d in zip(run, [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]))
    assert len({run[-1] for run in jittered}) > 1


async def test_retry_retries_the_listed_errors_only() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("away")
        return "done"

    log = logging.getLogger("test")
    assert await retry(flaky, what="flaky", errors=(ConnectionError,), log=log, first_delay=0.001, max_delay=0.001) == "done"
    assert len(attempts) == 3
    # As the callers write it: a lambda that returns the coroutine.
    attempts.clear()
    assert await retry(lambda: flaky(), what="flaky", errors=(ConnectionError,), log=log, first_delay=0.001) == "done"
    assert len(attempts) == 3

    async def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        await retry(broken, what="broken", errors=(ConnectionError,), log=log, first_delay=0.001)

    async def away() -> None:
        raise ConnectionError("still away")

    with pytest.raises(ConnectionError):
        await retry(away, what="away", errors=(ConnectionError,), log=log, first_delay=0.001, max_delay=0.001, give_up_after=0.05)
    with pytest.raises(ConnectionError):  # stopping: re-raised at once
        await retry(away, what="away", errors=(ConnectionError,), log=log, stopping=lambda: True)


async def test_a_periodic_pass_that_fails_is_logged_and_the_next_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    stop = asyncio.Event()
    passes: list[int] = []

    async def once() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise ValueError("the database went away")
        if len(passes) == 3:
            stop.set()

    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(every(stop, 0.01, once, "test pass", logging.getLogger("test")), 5)
    assert passes == [0, 1, 2]
    assert "test pass failed (ValueError: the database went away)" in caplog.text
