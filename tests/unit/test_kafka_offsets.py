"""The one reader of Kafka offsets: lag arithmetic (the reads themselves run against Kafka in the integration tests)."""

from __future__ import annotations

from aiokafka import TopicPartition

from runtime.kafka_offsets import behind, fetched_lag


def test_behind_counts_what_is_not_done_and_a_partition_never_done_from_its_start() -> None:
    ends = {0: 100, 1: 50, 2: 10}
    assert behind(ends, {0: 90, 1: 50}) == 10 + 0 + 10
    assert behind(ends, {0: 90, 1: 50}, start={2: 8}) == 10 + 0 + 2
    assert behind(ends, {0: 120}) == 0 + 50 + 10  # done past a (stale) end is not negative


class _Consumer:
    def __init__(self, highwater: dict[TopicPartition, int | None]) -> None:
        self._highwater = highwater

    def assignment(self) -> set[TopicPartition]:
        return set(self._highwater)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._highwater[tp]


def test_fetched_lag_sums_the_assigned_partitions_and_counts_what_is_unknown_as_told() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = _Consumer({a: 100, b: None})
    assert fetched_lag(consumer, {a: 40, b: 3}) == 60  # type: ignore[arg-type]
    assert fetched_lag(consumer, {a: 40}, unknown=1) == 61  # type: ignore[arg-type]
    assert fetched_lag(_Consumer({}), {}, unknown=1) == 1  # type: ignore[arg-type]  # not in the group yet
