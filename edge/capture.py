"""Frames from a video file, an RTSP/HTTP stream or a local camera.

A file is read in the caller's thread, every frame, paced at its own fps (or
as fast as possible), and ends or loops as configured.

A live stream is read by a connection thread into a one-frame slot, and the
caller takes the newest frame. That is what makes a real camera's faults
visible at once rather than after FFmpeg's 30 s timeouts (seen against a
GStreamer RTSP server on loopback: a server frozen with its connection open
made each ``read()`` block 30 s, and the first two returned a stale frame
with ``ok=True``, so the node needed 90 s to notice; a 16 s backoff then
kept it away 14 s after the server was back):

- a watchdog on frame arrival: no frame for ``stall_s`` is ``stalled``; the
  connection is abandoned (its thread may stay blocked in FFmpeg; it is a
  daemon and its frames are ignored) and a new one is opened at once;
- reconnects back off from ``reconnect_min_s`` to at most ``reconnect_max_s``
  with jitter (a site's cameras do not retry in step), so the stream is back
  within about 2 s of the camera's return;
- frames arriving faster than twice the camera's rate are a backlog burst
  after a stall and are dropped; the first frame after a gap says so
  (``Frame.after_gap``) so the tracker and scene start over instead of
  joining two moments far apart;
- while no frame comes the iterator yields ``Idle`` ticks, so the node keeps
  reporting health (its video state) and notices a stop within a tick.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from runtime.retry import delays

log = logging.getLogger("fleetsight.capture")

VideoState = Literal["starting", "ok", "stalled", "down", "ended"]

# FFmpeg's defaults probe a stream for ~3 s before the first frame (measured
# 2.85 s on loopback; 0.14 s with these); TCP: no UDP loss or firewall trouble.
# An operator's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins.
LIVE_FFMPEG_OPTIONS = "rtsp_transport;tcp|analyzeduration;200000|probesize;32768"
BURST_FACTOR = 0.5  # frames closer than this share of the frame interval are a backlog burst


@dataclass(frozen=True)
class Frame:
    index: int
    ts: int  # wall clock at capture, ms since epoch: the event time
    media_s: float  # position in the stream; drives dwell and timeouts
    image: np.ndarray
    after_gap: bool = False  # the first frame after a stall or an outage


@dataclass(frozen=True)
class Idle:
    """No frame yet: the stream is starting, stalled or down; time still passes."""

    ts: int
    media_s: float


def _is_file(uri: str) -> bool:
    return not uri.isdigit() and "://" not in uri


class _Connection(threading.Thread):
    """One attempt at a live stream: opens it and keeps the newest frame in a slot."""

    def __init__(
        self, target: int | str, open_timeout_s: float, read_timeout_s: float, wake: threading.Condition, source: VideoSource,
    ) -> None:
        super().__init__(name=f"capture {target}", daemon=True)
        self.target = target
        self.params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
        self.wake = wake
        self.status: Literal["opening", "open", "failed", "broken"] = "opening"
        self.fps = 0.0
        self.frame: tuple[np.ndarray, float] | None = None  # newest image and its arrival (monotonic)
        self.abandoned = threading.Event()
        self.source = source

    def _set(self, **changes: object) -> None:
        with self.wake:
            for name, value in changes.items():
                setattr(self, name, value)
            self.wake.notify_all()

    def run(self) -> None:
        backend = cv2.CAP_ANY if isinstance(self.target, int) else cv2.CAP_FFMPEG
        cap = cv2.VideoCapture(self.target, backend, self.params)
        try:
            if not cap.isOpened():
                self._set(status="failed")
                return
            self._set(status="open", fps=cap.get(cv2.CAP_PROP_FPS))
            while not self.abandoned.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    break
                with self.wake:
                    if self.frame is not None and not self.abandoned.is_set():
                        self.source.missed += 1  # the node was still busy with the one before
                    self.frame = (image, time.monotonic())
                    self.wake.notify_all()
        finally:
            cap.release()
        if self.status == "open":
            self._set(status="broken")

    def take(self) -> tuple[np.ndarray, float] | None:
        """The newest frame not taken yet (call with ``wake`` held)."""
        frame, self.frame = self.frame, None
        return frame


class VideoSource:
    """Iterates frames; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        loop: bool = False,
        realtime: bool = True,
        fps: float | None = None,
        stall_s: float = 2.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 2.0,
        open_timeout_s: float = 5.0,
        tick_s: float = 0.25,
    ) -> None:
        self.uri = uri
        self.is_file = _is_file(uri)
        self.loop = loop
        self.realtime = realtime
        self.fps_override = fps
        self.fps = fps or 10.0
        self.stall_s = stall_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.open_timeout_s = open_timeout_s
        self.tick_s = tick_s
        self.state: VideoState = "starting"
        self.reconnects = 0  # new connections after the stream broke, stalled or could not be opened
        self.burst_dropped = 0  # frames of a backlog burst that were not used
        self.missed = 0  # live frames replaced by a newer one before the node took them (it was busy)
        self._lost_s = 0.0  # video missed in gaps that are over
        self._started = time.monotonic()
        self.arrival: float | None = None  # monotonic arrival of the newest live frame handed out

    def lost_s(self) -> float:
        """Seconds of video missed since the start: closed gaps plus the one going on."""
        if self.state in ("stalled", "down", "starting") and not self.is_file:
            since = self.arrival if self.arrival is not None else self._started
            return self._lost_s + max(0.0, time.monotonic() - since - 1 / self.fps)
        return self._lost_s

    def frames(self, stop: threading.Event) -> Iterator[Frame | Idle]:
        """Frames (and, for a live stream, ``Idle`` ticks) until ``stop`` is set or a non-looping file ends."""
        if self.is_file:
            yield from self._file(stop)
        else:
            yield from self._live(stop)

    # --- files --------------------------------------------------------------------

    def _file(self, stop: threading.Event) -> Iterator[Frame]:
        index = 0
        started = time.monotonic()
        media_base = 0.0  # media time carried over loops
        while not stop.is_set():
            cap = cv2.VideoCapture(self.uri)
            if not cap.isOpened():
                cap.release()
                raise FileNotFoundError(f"cannot open video source {self.uri!r}")
            reported = cap.get(cv2.CAP_PROP_FPS)
            self.fps = self.fps_override or (reported if 1 <= reported <= 240 else 10.0)
            self.state = "ok"
            first_media = None
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if not ok or image is None:
                        break
                    pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
                    local = pos if pos > 0 or first_media is None else first_media + 1 / self.fps
                    first_media = local
                    media = media_base + local
                    if self.realtime:
                        # Pace a file at its own fps, as a live camera would deliver it.
                        delay = started + media - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    yield Frame(index, int(time.time() * 1000), media, image)
                    index += 1
            finally:
                cap.release()
            media_base += (first_media or 0.0) + 1 / self.fps
            if not self.loop:
                self.state = "ended"
                return

    # --- live streams -------------------------------------------------------------

    def _backoff(self) -> Iterator[float]:
        """Waits between attempts to reopen, from the first again once video flows."""
        return delays(self.reconnect_min_s, self.reconnect_max_s, jitter=0.5)

    def _idle(self) -> Idle:
        return Idle(int(time.time() * 1000), time.monotonic() - self._started)

    def _live(self, stop: threading.Event) -> Iterator[Frame | Idle]:
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", LIVE_FFMPEG_OPTIONS)
        # On every attempt to reopen a camera that is down, OpenCV printed "[ WARN:0@...] global
        # cap.cpp:212 open VIDEOIO(FFMPEG): backend is generally available but can't be used to capture
        # by name" and FFmpeg "[tcp @ 0x...] Connection to tcp://... failed: Connection refused"; this
        # module's own log says what happens, once per state. An operator's own levels win.
        if "OPENCV_LOG_LEVEL" not in os.environ:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
        backoff = self._backoff()
        wake = threading.Condition()
        index = 0
        conn: _Connection | None = None
        try:
            while not stop.is_set():
                # FFmpeg's read timeout must be longer than the watchdog's: when it
                # fires, read() returns the last frame again with ok=True (seen: a
                # frozen server's stale frame every 2 s kept a 2 s watchdog quiet).
                conn = _Connection(target, self.open_timeout_s, self.open_timeout_s + self.stall_s, wake, self)
                conn.start()
                opened_at = time.monotonic()
                reason = ""
                new_state: VideoState = "down"
                while not stop.is_set():
                    with wake:
                        if conn.frame is None and conn.status in ("opening", "open"):
                            wake.wait(self.tick_s)
                        taken = conn.take()
                        status = conn.status
                    now = time.monotonic()
                    if taken is None:
                        if status in ("failed", "broken"):
                            reason = "could not be opened" if status == "failed" else "broke"
                            new_state = "down"
                            break
                        last = max(self.arrival or 0.0, opened_at)
                        if status == "open" and now - last > self.stall_s:
                            reason, new_state = f"sent no frame for {now - last:.1f} s", "stalled"
                            break
                        if status == "opening" and now - last > self.open_timeout_s + self.stall_s:
                            reason, new_state = f"did not open in {now - last:.1f} s", "down"
                            break
                        yield self._idle()
                        continue
                    image, arrival = taken
                    previous = self.arrival
                    if previous is not None and arrival - previous < BURST_FACTOR / self.fps:
                        self.burst_dropped += 1  # a backlog delivered faster than the camera runs
                        continue
                    if self.state != "ok":
                        self.fps = self.fps_override or (conn.fps if 1 <= conn.fps <= 240 else 10.0)
                        if self.state != "starting":
                            log.info("video source %s is back after %.1f s", self.uri, arrival - (previous or self._started))
                        self.state = "ok"
                        backoff = self._backoff()
                    waited = arrival - (previous if previous is not None else self._started)
                    if waited > max(3 / self.fps, 0.5):
                        self._lost_s += waited - 1 / self.fps
                    self.arrival = arrival
                    # Longer than a stall: the scene starts over rather than join two far-apart moments.
                    yield Frame(index, int(time.time() * 1000), arrival - self._started, image, after_gap=waited > self.stall_s)
                    index += 1
                conn.abandoned.set()
                if stop.is_set():
                    return
                # One warning per outage; the retries that follow are debug.
                (log.warning if self.state in ("ok", "starting") else log.debug)("video source %s %s; reconnecting", self.uri, reason)
                if self.state != "down":
                    self.state = new_state
                if status in ("failed", "broken"):
                    # Refused or broken: back off. Stalled: reconnect at once (the old
                    # connection is stuck, which says nothing about a new one).
                    retry_at = time.monotonic() + next(backoff)
                    while not stop.wait(max(0.0, min(self.tick_s, retry_at - time.monotonic()))):
                        if time.monotonic() >= retry_at:
                            break
                        yield self._idle()
                    if stop.is_set():
                        return
                self.reconnects += 1
        finally:
            if conn is not None:
                conn.abandoned.set()
                # A healthy connection ends within a frame; one stuck in FFmpeg is
                # left to its timeout (see stuck_connections).
                conn.join(0.5)


def stuck_connections() -> int:
    """Connection threads still blocked in FFmpeg (a frozen camera). They cannot be
    interrupted; a process that stops with one should leave with ``os._exit``, because
    the interpreter's shutdown would kill the thread inside OpenCV's C++ and abort
    ("FATAL: exception not rethrown", seen on a stop right after a stall)."""
    return sum(1 for t in threading.enumerate() if isinstance(t, _Connection) and t.is_alive())
