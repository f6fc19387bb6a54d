"""Prometheus metrics of every long-running process, defined in one place.

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

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from runtime.watchdog import Watchdog

log = logging.getLogger("fleetsight.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Edge
EDGE_FRAMES = Counter("fleetsight_edge_frames", "Frames read", ["camera"])
EDGE_FRAMES_SKIPPED = Counter("fleetsight_edge_frames_skipped", "Frames the detector did not run on (motion gate, or the camera's detection rate)", ["camera"])
EDGE_INFERENCE = Histogram("fleetsight_edge_inference_seconds", "Detector time per frame", ["camera"],
                           buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1))
EDGE_EVENTS = Counter("fleetsight_edge_events", "Events stored in the outbox", ["camera", "type"])
EDGE_OUTBOX_DEPTH = Gauge("fleetsight_edge_outbox_depth", "Events waiting for the cloud's confirmation", ["camera"])
EDGE_OUTBOX_DROPPED = Gauge("fleetsight_edge_outbox_dropped", "Events a full outbox dropped, ever", ["camera"])
EDGE_LINK_UP = Gauge("fleetsight_edge_link_up", "1 while connected to the broker", ["camera"])
EDGE_MODEL = Gauge("fleetsight_edge_model_info", "The model in use (value 1)", ["camera", "version"])

# Bridge
BRIDGE_MESSAGES = Counter("fleetsight_bridge_messages", "MQTT messages handled", ["kind"])
BRIDGE_EVENTS = Counter("fleetsight_bridge_events_forwarded", "Events written to Kafka")
BRIDGE_DEADLETTERS = Counter("fleetsight_bridge_deadletters", "Input sent to the dead-letter topic", ["reason"])
BRIDGE_KAFKA_ACK = Histogram("fleetsight_bridge_kafka_ack_seconds", "MQTT arrival to Kafka acknowledgement", buckets=LATENCY_BUCKETS)
BRIDGE_PENDING = Gauge("fleetsight_bridge_pending_messages", "MQTT messages waiting for Kafka")

# Stream worker
WORKER_EVENTS = Counter("fleetsight_worker_events", "Events seen by the aggregation", ["result"])
WORKER_BATCH = Histogram("fleetsight_worker_batch_seconds", "Time to apply one batch", buckets=LATENCY_BUCKETS)
WORKER_LAG = Histogram("fleetsight_worker_event_lag_seconds", "Arrival in Kafka to aggregation", buckets=LATENCY_BUCKETS)
WORKER_ROWS = Counter("fleetsight_worker_rows_emitted", "Row values sent to the sink")
WORKER_SKIPPED_RECORDS = Counter("fleetsight_worker_skipped_records_recovered", "Records Faust jumped over, read directly")
WORKER_DEADLETTERS = Counter("fleetsight_worker_deadletters", "Records sent to the dead-letter topic", ["reason"])

# Sink
SINK_ROWS = Counter("fleetsight_sink_rows_written", "Row values upserted", ["table"])
SINK_WRITE = Histogram("fleetsight_sink_write_seconds", "Time of one UPSERT transaction", buckets=LATENCY_BUCKETS)
SINK_LAG = Histogram("fleetsight_sink_record_lag_seconds", "Row record in Kafka to row in SQL", buckets=LATENCY_BUCKETS)
SINK_RETRIES = Counter("fleetsight_sink_write_retries", "Database writes retried")
SINK_BACKLOG = Gauge("fleetsight_sink_backlog_records", "Row records in Kafka not yet written")

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
