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
    "fleetsight_sink_rows_expired", "Rows not written: past what their table keeps (FLEETSIGHT_RETENTION_DAYS), or with no partition", ["table"]
)
SINK_SITE_ERRORS = Counter(
    "fleetsight_sink_site_errors", "Batches whose site tables could not be brought up to date (logged; the rows were written)"
)
PARTITIONS_MADE = Counter("fleetsight_partitions_created", "Partitions made ahead of time", ["table"])
PARTITIONS_DROPPED = Counter("fleetsight_partitions_dropped", "Partitions dropped after their retention", ["table"])

# The alert notifier (sinks/notifier.py).
NOTIFY_QUEUED = Counter("fleetsight_notifier_queued", "Alert deliveries queued (one per alert change and webhook)")
NOTIFY_BACKLOG = Gauge("fleetsight_notifier_backlog_records", "Alert records in Kafka not yet queued")
NOTIFY_PENDING = Gauge("fleetsight_notifier_pending", "Deliveries queued and not yet done with", ["webhook"])
NOTIFY_ATTEMPTS = Counter(
    "fleetsight_notifier_attempts", "POSTs to webhooks by what came of them (delivered, retry, rejected, expired)", ["webhook", "outcome"]
)
NOTIFY_POST = Histogram("fleetsight_notifier_post_seconds", "One POST to a webhook, answer included", ["webhook"], buckets=LATENCY_BUCKETS)
NOTIFY_DELAY = Histogram("fleetsight_notifier_delivery_delay_seconds", "Queued to delivered", buckets=LATENCY_BUCKETS)
