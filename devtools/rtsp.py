"""A real RTSP camera server on loopback for tests and benchmarks, which they
may kill, freeze (SIGSTOP, a camera that hangs with its connection open)
and bring back.

The server is GStreamer's, from Debian packages (``scripts/install-deps.sh``
installs them), run by Debian's own Python: ``devtools/rtsp_server.py``.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from devtools.ports import free_port, port_open
from runtime.waiting import wait_until

SYSTEM_PYTHON = "/usr/bin/python3"  # the gi bindings are Debian's, not the virtualenv's
SCRIPT = Path(__file__).with_name("rtsp_server.py")


class RtspServer:
    """``rtsp://127.0.0.1:<port>/cam<i>``: ``video`` looped at ``fps`` as H.264, ``mounts`` streams."""

    def __init__(self, video: Path, *, mounts: int = 1, fps: int = 10, port: int | None = None, log: Path | None = None) -> None:
        self.video = video
        self.mounts = mounts
        self.fps = fps
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    def url(self, mount: int = 0) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{mount}"

    def start(self, timeout: float = 20.0) -> None:
        """Start it (again, on the same port) and wait until it accepts connections."""
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SCRIPT), str(self.video), "--port", str(self.port), "--mounts", str(self.mounts), "--fps", str(self.fps)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_until(
            lambda: port_open(self.port), timeout, f"the RTSP server on port {self.port}", interval=0.05,
            abort=lambda: f"it exited with {proc.returncode} (is gir1.2-gst-rtsp-server-1.0 installed?)" if proc.poll() is not None else None,
        )

    def kill(self) -> None:
        """Gone at once, as a camera losing power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen one must be able to die
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """Hangs with its connections open, as a camera whose firmware locked up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
