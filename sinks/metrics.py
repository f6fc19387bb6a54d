"""Prometheus metrics of the SQL sink (served by ``runtime.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.metrics import LATENCY_BUCKETS

SINK_ROWS = Counter("fleetsight_sink_rows_written", "Row values upserted", ["table"])
SINK_WRITE = Histogram("fleetsight_sink_write_seconds", "Time of one UPSERT transaction", buckets=LATENCY_BUCKETS)
SINK_LAG = Histogram("fleetsight_sink_record_lag_seconds", "Row record in Kafka to row in SQL", buckets=LATENCY_BUCKETS)
SINK_RETRIES = Counter("fleetsight_sink_write_retries", "Database writes retried")
SINK_BACKLOG = Gauge("fleetsight_sink_backlog_records", "Row records in Kafka not yet written")
SINK_ROWS_EXPIRED = Counter(
    "fleetsight_sink_rows_expired", "Rows not written: older than the oldest partition of their table (retention)", ["table"]
)
PARTITIONS_MADE = Counter("fleetsight_partitions_created", "Partitions made ahead of time", ["table"])
PARTITIONS_DROPPED = Counter("fleetsight_partitions_dropped", "Partitions dropped after their retention", ["table"])
