"""The durable outbox: seqs, limits, confirmation."""

from __future__ import annotations

from pathlib import Path

from edge.events import NewEvent
from edge.outbox import Outbox


def new(n: int, ts: int = 1764072000000) -> list[NewEvent]:
    return [NewEvent(ts + i, "track.start", {"track_id": i, "class": "person", "confidence": 0.5}) for i in range(n)]


def test_seqs_are_contiguous_and_never_reused_after_confirm_or_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, "cam-1", "s")
    assert [e.seq for e in box.append(new(3))] == [1, 2, 3]
    box.confirm(3)
    assert box.depth() == 0 and box.head() == 4
    box.close()
    box = Outbox(path, "cam-1", "s")
    assert [e.seq for e in box.append(new(2))] == [4, 5]
    assert [e.seq for e in box.read(1, 10)] == [4, 5]
    assert box.read(5, 10)[0].data["track_id"] == 1


def test_full_outbox_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s", max_events=10)
    box.append(new(8))
    box.append(new(5))
    assert box.depth() == 10 and box.head() == 4 and box.dropped == 3
    box.append(new(4))
    assert box.head() == 8 and box.dropped == 7 and box.last_seq() == 17


def test_renumber_after_a_lost_outbox_keeps_seqs_fresh(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s")
    box.append(new(3))
    assert box.renumber_after(500) == 3
    assert [e.seq for e in box.read(0, 10)] == [501, 502, 503]
    assert box.append(new(1))[0].seq == 504


def test_confirm_is_idempotent_and_partial(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s")
    box.append(new(5))
    assert box.confirm(2) == 2
    assert box.confirm(2) == 0
    assert box.head() == 3 and box.depth() == 3


def test_keep_confirmed_moves_rows_aside(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "cam-1", "s", keep_confirmed=True)
    box.append(new(5))
    assert box.confirm(3) == 3
    assert box.depth() == 2 and [e.seq for e in box.all_events()] == [1, 2, 3, 4, 5]
