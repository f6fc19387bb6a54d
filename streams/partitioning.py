"""Which Kafka partition holds a camera's events (and its table state).

The bridge writes a camera's events to this partition and the stream worker
keeps that camera's table state in the same changelog partition, so a worker
that takes over a partition also takes over exactly that state.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(camera_id: str, partitions: int) -> int:
    """Kafka's default (murmur2) partition for the key ``camera_id``."""
    return (murmur2(camera_id.encode()) & 0x7FFFFFFF) % partitions
