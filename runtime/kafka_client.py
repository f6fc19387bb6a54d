"""How this process connects to Kafka: plain TCP, or its own login over TLS.

Every aiokafka client of the pipeline (the bridge's producer and shard
group, the worker's Faust app and lag probe, the sink's consumer, topic
creation) takes these settings, so one process has one identity.
SCRAM-SHA-512: the password never crosses the wire, Kafka keeps only its
salted hash, and users are added to a running cluster without a restart
(`kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]'`).
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from runtime.settings import KafkaSettings

MECHANISM = "SCRAM-SHA-512"


def kafka_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's connection arguments for this process (none for plain TCP)."""
    if not settings.kafka_username:
        return {}
    assert settings.kafka_password_file is not None  # the settings insist on it
    try:
        password = settings.kafka_password_file.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"cannot read the Kafka password of {settings.kafka_username}: {exc}") from exc
    ca = str(settings.kafka_ca_file) if settings.kafka_ca_file else None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": password,
        # Verifies the broker's certificate and host name.
        "ssl_context": create_ssl_context(cafile=ca),
    }
