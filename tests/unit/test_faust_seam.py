"""What the worker relies on in Faust's private parts (streams/faust_seam.py): this fails when an upgrade changes it."""

from __future__ import annotations

import inspect

from faust.assignor.partition_assignor import PartitionAssignor
from faust.streams import Stream
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from mode.threads import QueueServiceThread


def test_the_consumer_thread_and_its_aiokafka_consumer_are_where_the_seam_reaches_for_them() -> None:
    # app.consumer is the aiokafka driver's Consumer, which delegates to a consumer thread kept in _thread.
    assert issubclass(Consumer, ThreadDelegateConsumer)
    assert "self._thread = self._new_consumer_thread()" in inspect.getsource(ThreadDelegateConsumer.__init__)
    assert Consumer._new_consumer_thread.__annotations__.get("return") in ("AIOKafkaConsumerThread", AIOKafkaConsumerThread)
    # call_thread runs a coroutine function on the thread's loop and returns its result.
    assert issubclass(AIOKafkaConsumerThread, QueueServiceThread)
    assert list(inspect.signature(QueueServiceThread.call_thread).parameters) == ["self", "fun", "args", "kwargs"]
    assert inspect.iscoroutinefunction(QueueServiceThread.call_thread)
    # _ensure_consumer hands back the aiokafka consumer itself (commit, assignment).
    source = inspect.getsource(AIOKafkaConsumerThread._ensure_consumer)
    assert "return self._consumer" in source


def test_assigned_actives_and_take_events_keep_their_shape() -> None:
    assert list(inspect.signature(PartitionAssignor.assigned_actives).parameters) == ["self"]
    params = inspect.signature(Stream.take_events).parameters
    assert list(params)[:3] == ["self", "max_", "within"]
    assert inspect.isasyncgenfunction(inspect.unwrap(Stream.take_events)) or "yield" in inspect.getsource(Stream.take_events)
