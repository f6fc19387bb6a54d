"""A stall watchdog: a process that has work waiting and makes no progress exits, to be restarted.

Why: a worker hung for good in Faust's table recovery, another went silent
after reading skipped offsets, both alive and doing nothing (issue 12). A
supervisor (compose ``restart:``, systemd, the chaos harness) restarts a
process that exits; it cannot restart one that hangs. So every long-running
process reports progress (:meth:`Watchdog.progress`), says how much work is
waiting (a callable, sampled from the watchdog's thread) and what it is
doing; a thread outside the event loop exits the process with
:data:`STALL_EXIT` when work has waited ``timeout_s`` without progress, or
when the event loop itself has not turned for ``timeout_s`` (blocked),
after logging what it waited on and every thread's stack.

A wait on a part that *reports* a fault it recovers from (Kafka's buffer
full, a leader gone, not enough in-sync replicas, a commit refused by a
rebalance, the database away) is not a hang: the process says so with
:meth:`Watchdog.fault` each time the fault is reported, and the clock waits
while it keeps being said. Exiting there only restarted the process into
the same condition (issue 35: a bridge exited four times in a row on a
busy box, each restart resending the same backlog, and nothing moved for
19 minutes). Silence is still a stall: a client that hears nothing (a
frozen broker) times out in seconds and so reports a fault.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("fleetsight.watchdog")

STALL_EXIT = 70  # EX_SOFTWARE: "stalled", told apart from a crash (1)
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class Health:
    """What ``/health`` answers."""

    ok: bool
    progress_age_s: float
    waiting: int
    doing: str
    reason: str = ""


class Watchdog:
    """Progress bookkeeping (from the event loop) and the thread that judges it."""

    def __init__(
        self,
        process: str,
        timeout_s: float,
        waiting: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.process = process
        self.timeout_s = timeout_s
        self._waiting = waiting
        self._clock = clock
        self._exit = exit
        self._progress_at = clock()
        self._fault_at = float("-inf")
        self._beat_at = clock()
        self.doing = "starting"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- from the event loop ----------------------------------------------------

    def progress(self, doing: str | None = None) -> None:
        """Work was done (a batch applied, a message forwarded)."""
        self._progress_at = self._clock()
        if doing is not None:
            self.doing = doing

    def fault(self, doing: str) -> None:
        """The work waits on a part that reported a fault it recovers from: not a stall, while said again within the timeout."""
        self._fault_at = self._clock()
        self.doing = doing

    def busy(self, doing: str) -> None:
        """What the process is about to wait on; named in the log if it stalls there."""
        self.doing = doing

    # --- judged from anywhere -----------------------------------------------------

    def waiting(self) -> int:
        try:
            return max(0, int(self._waiting()))
        except Exception:  # noqa: BLE001 - a broken probe must not kill the judge
            return 0

    def progress_age(self) -> float:
        """Seconds since progress, or since a fault was last reported, whichever is later."""
        return max(0.0, self._clock() - max(self._progress_at, self._fault_at))

    def check(self, limit: float | None = None) -> Health:
        """Healthy unless work has waited ``limit`` (default: the timeout) without progress, or the loop is blocked."""
        limit = self.timeout_s if limit is None else limit
        now = self._clock()
        waiting = self.waiting()
        if not waiting:
            # Nothing to do is not a stall: the clock starts when work waits.
            self._progress_at = now
        age = self.progress_age()
        if self._thread is not None and now - self._beat_at > limit:
            return Health(False, age, waiting, self.doing, f"event loop blocked for {now - self._beat_at:.0f} s")
        if waiting and age > limit:
            return Health(False, age, waiting, self.doing, f"no progress for {age:.0f} s with {waiting} waiting")
        return Health(True, age, waiting, self.doing)

    def health(self) -> Health:
        """For ``/health``: unhealthy already at half the timeout, so a supervisor sees it coming."""
        return self.check(self.timeout_s / 2)

    # --- the thread -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start judging; with ``loop``, also watch that the loop keeps turning."""
        if loop is not None:
            def beat() -> None:
                self._beat_at = self._clock()
                if not self._stop.is_set():
                    loop.call_later(HEARTBEAT_S, beat)

            loop.call_soon_threadsafe(beat)
        self._thread = threading.Thread(target=self._run, name=f"{self.process}-watchdog", daemon=True)
        self._thread.start()
        log.info("%s watchdog: exits after %.0f s without progress while work waits", self.process, self.timeout_s)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 4)):
            health = self.check()
            if not health.ok:
                self._die(health)
                return

    def _die(self, health: Health) -> None:
        log.critical(
            "%s stalled: %s; it was %s. Exiting with %d so that it is restarted.",
            self.process, health.reason, health.doing, STALL_EXIT,
        )
        try:
            for handler in logging.getLogger().handlers:
                handler.flush()
            # The real stderr: Faust's mode swaps sys.stderr for a logging
            # proxy without a file descriptor, which faulthandler needs.
            stream = sys.__stderr__
            if stream is not None:
                faulthandler.dump_traceback(file=stream, all_threads=True)
                stream.flush()
        finally:
            self._exit(STALL_EXIT)
