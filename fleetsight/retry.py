"""Retry an async call with capped exponential backoff, telling the watchdog what it waits on."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from fleetsight.watchdog import Watchdog

T = TypeVar("T")


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
    on_retry: Callable[[], None] | None = None,
) -> T:
    """``call()`` until it does not raise one of ``errors``; re-raise once ``stopping()``.

    No limit on attempts: the stall watchdog ends a wait that goes on too long.
    """
    delay = first_delay
    attempt = 1
    while True:
        if watchdog is not None:
            watchdog.busy(what if attempt == 1 else f"{what} (attempt {attempt})")
        try:
            return await call()
        except errors as exc:
            if stopping():
                raise
            if on_retry is not None:
                on_retry()
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, exc.__class__.__name__, str(exc)[:200], delay)
            await asyncio.sleep(delay)  # backoff while the service is away
            delay = min(delay * 2, max_delay)
            attempt += 1
