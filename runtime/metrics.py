"""Serving Prometheus metrics and health, and the metrics every supervised process shares.

Each stage defines its own metrics beside its code (``edge/metrics.py``,
``streams/metrics.py``, ``sinks/metrics.py``), all in the default registry.

Each process serves ``/metrics`` on its own port (settings
``*_metrics_port``, camera config ``metrics_port``), on ``metrics_bind``
(loopback by default). A port already taken is logged and skipped: metrics
never stop the pipeline. Processes with a stall watchdog
(``runtime.watchdog``) also answer ``/health`` there: 200 while they make
progress or have nothing to do, 503 once work has waited half the stall
timeout (the compose healthchecks ask it).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

if TYPE_CHECKING:
    from runtime.watchdog import Watchdog

log = logging.getLogger("fleetsight.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Every process with a stall watchdog
PROGRESS_AGE = Gauge("fleetsight_progress_age_seconds", "Seconds since the process last made progress", ["process"])
WORK_WAITING = Gauge("fleetsight_work_waiting", "Work the process knows is waiting (records, messages)", ["process"])


def watch(watchdog: Watchdog) -> None:
    """Expose a process's watchdog on /metrics (and, via :func:`serve`, /health)."""
    global _watchdog
    _watchdog = watchdog
    PROGRESS_AGE.labels(watchdog.process).set_function(watchdog.progress_age)
    WORK_WAITING.labels(watchdog.process).set_function(watchdog.waiting)


_watchdog: Watchdog | None = None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif path == "/health":
            if _watchdog is None:
                self._send(200, "application/json", b'{"status": "ok"}')
                return
            h = _watchdog.health()
            body = {
                "status": "ok" if h.ok else "stalled", "process": _watchdog.process,
                "progress_age_s": round(h.progress_age_s, 1), "waiting": h.waiting, "doing": h.doing, "reason": h.reason,
            }
            self._send(200 if h.ok else 503, "application/json", json.dumps(body).encode())
        else:
            self._send(404, "text/plain", b"not found: try /metrics or /health\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would drown the process's own log


def serve(port: int | None, bind: str = "127.0.0.1") -> bool:
    """Serve /metrics and /health; False (and a warning) if the port cannot be had."""
    if not port:
        return False
    try:
        server = ThreadingHTTPServer((bind, port), _Handler)
    except OSError as exc:
        log.warning("metrics not served on %s:%s: %s", bind, port, exc)
        return False
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics, health on /health", bind, port)
    return True
