"""Prometheus metrics of the bridge and the stream worker (served by ``runtime.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.metrics import LATENCY_BUCKETS

# Bridge
BRIDGE_MESSAGES = Counter("fleetsight_bridge_messages", "MQTT messages handled", ["kind"])
BRIDGE_EVENTS = Counter("fleetsight_bridge_events_forwarded", "Events written to Kafka")
BRIDGE_RECORDS = Counter("fleetsight_bridge_event_records", "Records written to the events topic (a camera's waiting messages share one)")
BRIDGE_DEADLETTERS = Counter("fleetsight_bridge_deadletters", "Input sent to the dead-letter topic", ["reason"])
BRIDGE_KAFKA_ACK = Histogram("fleetsight_bridge_kafka_ack_seconds", "MQTT arrival to Kafka acknowledgement", buckets=LATENCY_BUCKETS)
BRIDGE_KAFKA_FAULTS = Counter(
    "fleetsight_bridge_kafka_faults", "Faults Kafka reported that the bridge waited out (backpressure, not an exit)", ["fault"],
)
BRIDGE_PENDING = Gauge("fleetsight_bridge_pending_messages", "MQTT messages waiting for Kafka")

# Stream worker
WORKER_EVENTS = Counter("fleetsight_worker_events", "Events seen by the aggregation", ["result"])
WORKER_BATCH = Histogram("fleetsight_worker_batch_seconds", "Time to apply one batch", buckets=LATENCY_BUCKETS)
WORKER_LAG = Histogram("fleetsight_worker_event_lag_seconds", "Arrival in Kafka to aggregation", buckets=LATENCY_BUCKETS)
WORKER_ROWS = Counter("fleetsight_worker_rows_emitted", "Row values sent to the sink")
WORKER_OFFSET_JUMPS = Counter("fleetsight_worker_offset_jumps", "Batches whose records jumped past an undelivered offset (Faust sent back to it)")
WORKER_DEADLETTERS = Counter("fleetsight_worker_deadletters", "Records sent to the dead-letter topic", ["reason"])
# Summed over the workers (each counts the cameras of its partitions) for the share-offline alert rule.
WORKER_CAMERAS = Gauge("fleetsight_worker_cameras", "Cameras of this worker's partitions, online or offline, at its last status sweep", ["state"])
# Where a batch's time goes (decode, state, fold, status, send, save, commit) and how
# long the worker waited for Faust's next batch: the benchmark reads it (BENCHMARKS.md).
WORKER_STAGE = Counter("fleetsight_worker_stage_seconds", "Time the worker spent in each stage of its batches", ["stage"])
