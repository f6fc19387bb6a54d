"""The parts of Faust the worker needs that Faust does not offer publicly, behind one seam.

Checked against faust-streaming 0.15.3; ``tests/unit/test_faust_seam.py``
fails when an upgrade changes any of them:

- **Committing offsets of our choosing.** The worker commits the offsets
  the database holds after its transaction (``streams/worker.py``), not
  Faust's acked ones. Faust's ``Consumer._commit`` takes offsets, but it
  drops partitions no longer assigned and hands aiokafka whatever is left,
  and it *crashes the app* on any error but one: after a rebalance took
  every partition of a batch, aiokafka got an empty map, raised
  ``ValueError({})`` and the worker died (issue 35). So the commit runs here,
  in Faust's consumer thread (the aiokafka consumer lives on that thread's
  loop), with our own filter and error handling: a refused commit is only a
  commit the next owner makes from the database.
- **The partitions this worker actively owns** (``PartitionAssignor.assigned_actives``).
- **Batches of events with their messages** (``Stream.take_events``: the
  class has it, the ``StreamT`` protocol does not).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP

from runtime.kafka_client import commit_read

log = logging.getLogger("fleetsight.worker")


async def commit(app: faust.App, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` (next offset per partition) of the partitions still assigned to this worker.

    False when none is assigned any more or Kafka refused the commit (a
    rebalance under way, the coordinator moving): nothing to do then, as the
    database holds the offsets and whoever owns the partition next starts there.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]  # noqa: SLF001 - ThreadDelegateConsumer's consumer thread

    async def in_thread() -> bool:
        consumer = thread._ensure_consumer()  # noqa: SLF001 - the aiokafka consumer, on this thread's loop
        assigned = consumer.assignment()
        mine = {TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()
                if TopicPartition(tp.topic, tp.partition) in assigned}
        return bool(mine) and await commit_read(consumer, log, offsets=mine)

    ok: bool = await thread.call_thread(in_thread)
    return ok


def assigned_actives(app: faust.App) -> set[TP]:
    """The partitions Faust's assignor gave this worker to process (not the standbys)."""
    actives: set[TP] = app.assignor.assigned_actives()
    return actives


def take_events(stream: faust.StreamT, max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
    """Batches of up to ``max_`` events (each with its ``message``), whatever came within ``within`` seconds."""
    batches: AsyncIterator[Sequence[Any]] = stream.take_events(max_, within=within)  # type: ignore[attr-defined]
    return batches
