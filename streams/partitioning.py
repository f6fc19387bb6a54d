"""Which Kafka partition holds a camera's events (and which lock guards its state).

The bridge writes a camera's events to this partition; the stream worker
files that camera's state under the same partition in PostgreSQL and
changes it only while holding the partition's row lock (``streams.state``),
so a worker that takes over a partition takes over exactly that state.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(camera_id: str, partitions: int) -> int:
    """Kafka's default (murmur2) partition for the key ``camera_id``."""
    return (murmur2(camera_id.encode()) & 0x7FFFFFFF) % partitions
