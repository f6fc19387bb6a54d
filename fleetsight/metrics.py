"""Prometheus metrics of every long-running process, defined in one place.

Each process serves ``/metrics`` on its own port (settings
``*_metrics_port``, camera config ``metrics_port``), on ``metrics_bind``
(loopback by default). A port already taken is logged and skipped: metrics
never stop the pipeline.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(port: int | None, bind: str = "127.0.0.1") -> bool:
    """Serve /metrics; False (and a warning) if the port cannot be had."""
    if not port:
        return False
    try:
        start_http_server(port, addr=bind)
    except OSError as exc:
        log.warning("metrics not served on %s:%s: %s", bind, port, exc)
        return False
    log.info("metrics on http://%s:%s/metrics", bind, port)
    return True
