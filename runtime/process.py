"""How a long-running stage process (bridge, sink, notifier) starts and stops: one place, not a copy each."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from runtime import metrics
from runtime.watchdog import Watchdog


async def run_supervised(
    run: Callable[[], Awaitable[None]], stop: Callable[[], None], watchdog: Watchdog, *,
    metrics_port: int | None, metrics_bind: str, log: logging.Logger, on_failure: str,
) -> int:
    """Serve /metrics and /health, arm the stall watchdog, stop on SIGTERM/SIGINT, and ``run()``.

    Returns the exit code: 0 after a clean stop, 1 (``on_failure`` logged with the
    traceback) when ``run`` raised.
    """
    metrics.watch(watchdog)
    metrics.serve(metrics_port, metrics_bind)
    loop = asyncio.get_running_loop()
    watchdog.start(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await run()
    except Exception:
        log.exception("%s", on_failure)
        return 1
    return 0
