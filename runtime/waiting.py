"""Wait for a condition with a deadline: the one poll loop every process, tool and test uses.

Sleeping a fixed time and hoping is how races get into tests and start-up
scripts; these poll a condition, stop as soon as it holds, and say what was
awaited (and the last value seen) when the deadline passes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold before the deadline."""


class WaitAborted(RuntimeError):
    """``abort`` gave a reason to stop waiting (e.g. the awaited process exited)."""


def _timed_out(what: str, timeout: float, last: object) -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy and return that.

    Raises :class:`WaitTimeout` after ``timeout`` seconds; ``abort`` may end the
    wait early with a reason (e.g. the process being waited for has exited),
    raised as :class:`WaitAborted`.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if abort is not None and (reason := abort()):
            raise WaitAborted(reason)
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)  # the poll interval of a condition with a deadline


@overload
async def wait_for(check: Callable[[], Awaitable[T]], timeout: float, what: str, *, interval: float = ...) -> T: ...
@overload
async def wait_for(check: Callable[[], T], timeout: float, what: str, *, interval: float = ...) -> T: ...


async def wait_for(check: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.2) -> Any:
    """:func:`wait_until` for an event loop; ``check`` may be plain or async."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)  # the poll interval of a condition with a deadline


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass, whichever is first; True if it was set.
    For loops that pause between rounds but must stop (or wake) at once when told."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def every(stop: asyncio.Event, seconds: float, once: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """``once()`` now and every ``seconds`` until ``stop``: a pass that fails is logged, and the next one tries again.
    For the periodic passes beside a process's main loop (the sink's reconciler and capacity check)."""
    while not stop.is_set():
        try:
            await once()
        except Exception as exc:  # noqa: BLE001 - the process goes on; the next pass tries again
            log.warning("%s failed (%s: %s); trying again in %.0f s", what, exc.__class__.__name__, exc, seconds)
        await wait_event(stop, seconds)
