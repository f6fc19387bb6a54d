"""Retry with capped exponential backoff: one policy for every process.

Built on tenacity (9.x, kept: async support, wait strategies, callbacks)
rather than a loop of our own per call site. The database writers, the worker,
Kafka topic creation and the camera's reconnect loop all back off the same
way: ``first_delay`` doubling up to ``max_delay``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from runtime.watchdog import Watchdog

T = TypeVar("T")


def _wait(first_delay: float, max_delay: float) -> wait_exponential:
    return wait_exponential(multiplier=first_delay, min=first_delay, max=max_delay)


def delays(first_delay: float = 0.5, max_delay: float = 10.0, jitter: float = 0.0) -> Iterator[float]:
    """The policy's delays, one per failed attempt, for loops that are not a single call
    (a video stream that is reopened and read on). ``jitter``: each delay is
    shortened by a random share up to this, so many clients do not retry in step."""
    wait = _wait(first_delay, max_delay)
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    while True:
        yield wait(state) * (1 - random.uniform(0, jitter))
        state.attempt_number += 1


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    errors: tuple[type[BaseException], ...],
    log: logging.Logger,
    watchdog: Watchdog | None = None,
    stopping: Callable[[], bool] = lambda: False,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    give_up_after: float | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """``call()`` until it does not raise one of ``errors``; re-raise once ``stopping()``
    or after ``give_up_after`` seconds.

    No limit by default. Each failure tells the watchdog that the part reported
    a fault (not a hang); an attempt that hangs silently is still a stall.
    """

    def failed(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, errors) and not stopping()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None:
            on_retry()
        delay = state.next_action.sleep if state.next_action else 0.0
        if watchdog is not None:
            # The part answered with an error: waiting on it is not a hang.
            watchdog.fault(f"{what}: retrying after {type(exc).__name__}")
        log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, str(exc)[:200], delay)

    def before(state: RetryCallState) -> None:
        if watchdog is not None:
            n = state.attempt_number
            watchdog.busy(what if n == 1 else f"{what} (attempt {n})")

    retrying = AsyncRetrying(
        retry=failed,
        wait=_wait(first_delay, max_delay),
        stop=stop_never if give_up_after is None else stop_after_delay(give_up_after),
        before=before,
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        # tenacity awaits only what is a coroutine function; a lambda returning
        # an awaitable is not one, and its coroutine came back unawaited (seen:
        # the worker's batches, "'coroutine' object has no attribute 'applied'").
        return await call()

    return await retrying(attempt)
