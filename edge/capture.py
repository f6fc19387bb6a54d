"""Frames from a video file, an RTSP/HTTP stream or a local camera.

A broken or ended stream is reopened with backoff and reported; it never
ends the process. A file ends, or loops, as configured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.retry import delays

log = logging.getLogger("fleetsight.capture")


@dataclass(frozen=True)
class Frame:
    index: int
    ts: int  # wall clock at capture, ms since epoch: the event time
    media_s: float  # position in the stream; drives dwell and timeouts
    image: np.ndarray


def _is_file(uri: str) -> bool:
    return not uri.isdigit() and "://" not in uri


class VideoSource:
    """Iterates frames; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        loop: bool = False,
        realtime: bool = True,
        fps: float | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.uri = uri
        self.is_file = _is_file(uri)
        self.loop = loop
        self.realtime = realtime
        self.fps_override = fps
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.fps = fps or 10.0
        self.reconnects = 0
        self.state = "starting"

    def _open(self) -> cv2.VideoCapture | None:
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            return None
        reported = cap.get(cv2.CAP_PROP_FPS)
        self.fps = self.fps_override or (reported if 1 <= reported <= 240 else 10.0)
        return cap

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames until ``stop`` is set (or a non-looping file ends)."""
        index = 0
        backoff = delays(self.reconnect_min_s, self.reconnect_max_s)
        started = time.monotonic()
        media_base = 0.0  # media time carried over loops and reconnects
        while not stop.is_set():
            cap = self._open()
            if cap is None:
                self.state = "reconnecting"
                if self.is_file and index == 0:
                    raise FileNotFoundError(f"cannot open video source {self.uri!r}")
                delay = next(backoff)
                log.warning("video source %s unavailable; retrying in %.0f s", self.uri, delay)
                if stop.wait(delay):
                    return
                self.reconnects += 1
                continue
            self.state = "ok"
            backoff = delays(self.reconnect_min_s, self.reconnect_max_s)
            opened_at = time.monotonic()
            first_media = None
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if not ok or image is None:
                        break
                    if self.is_file:
                        pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
                        local = pos if pos > 0 or first_media is None else first_media + 1 / self.fps
                    else:
                        local = time.monotonic() - opened_at
                    first_media = local
                    media = media_base + local
                    if self.is_file and self.realtime:
                        # Pace a file at its own fps, as a live camera would deliver it.
                        due = started + media
                        delay = due - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    yield Frame(index, int(time.time() * 1000), media, image)
                    index += 1
            finally:
                cap.release()
            media_base += (first_media or 0.0) + 1 / self.fps
            if self.is_file and not self.loop:
                self.state = "ended"
                return
            if not self.is_file:
                self.state = "reconnecting"
                self.reconnects += 1
                log.warning("video source %s ended or broke; reconnecting", self.uri)
                if stop.wait(next(backoff)):
                    return
