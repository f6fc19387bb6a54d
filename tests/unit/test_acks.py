"""Ack watermarks only cover contiguous, settled seqs."""

from __future__ import annotations

from streams.acks import AckTracker


def test_no_watermark_until_a_floor_is_known() -> None:
    acks = AckTracker()
    acks.confirm("c", 5)
    acks.confirm("c", 6)
    assert acks.watermark("c") is None and acks.take_changed() == {}
    acks.raise_floor("c", 4)  # the edge says: my oldest held event is 5
    assert acks.watermark("c") == 6
    assert acks.take_changed() == {"c": 6}
    assert acks.take_changed() == {}


def test_gap_holds_the_watermark_until_filled() -> None:
    acks = AckTracker()
    acks.raise_floor("c", 0)
    for seq in (1, 2, 4, 5):
        acks.confirm("c", seq)
    assert acks.watermark("c") == 2 and acks.pending("c") == 2
    acks.confirm("c", 3)
    assert acks.watermark("c") == 5 and acks.pending("c") == 0


def test_a_dropped_range_is_settled_by_the_outbox_head() -> None:
    acks = AckTracker()
    acks.raise_floor("c", 10)
    acks.confirm("c", 50)
    assert acks.watermark("c") == 10
    acks.raise_floor("c", 49)  # the edge dropped 11..49 from a full outbox
    assert acks.watermark("c") == 50


def test_floors_and_confirms_never_move_backwards() -> None:
    acks = AckTracker()
    acks.raise_floor("c", 100)
    acks.raise_floor("c", 3)
    acks.confirm("c", 7)
    assert acks.watermark("c") == 100
