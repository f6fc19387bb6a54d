"""The reconciliation verdict for one camera-minute (pure; the SQL side is tested in integration)."""

from __future__ import annotations

from schemas.ledger import MinuteLedger, digest_hex, seq_digest
from sinks.reconcile import Check, CloudMinute, judge

T0 = 1764072000000
GRACE = 60_000


def edge(seqs: list[int], dropped: tuple[int, ...] = ()) -> MinuteLedger:
    ledger = MinuteLedger(T0)
    for seq in seqs:
        ledger.record(seq, "track.start", {"class": "person"})
    for seq in dropped:
        ledger.drop(seq, "track.start", {"class": "person"})
    return ledger


def cloud(seqs: list[int]) -> CloudMinute:
    totals = {"objects|person": len(seqs)} if seqs else {}
    return CloudMinute("s", len(seqs), min(seqs, default=None), max(seqs, default=None), digest_hex(seq_digest(seqs)), totals)


def verdict(ledger: MinuteLedger | None, held: CloudMinute, age_ms: int = 10 * GRACE):
    return judge(Check("cam", T0, ledger, held, changed_at=T0), T0 + age_ms, GRACE)


def test_states() -> None:
    assert verdict(edge([1, 2, 3]), cloud([1, 2, 3])).state == "match"
    assert verdict(None, cloud([1, 2, 3])).state == "pending"  # an older node: never a match
    assert verdict(edge([1, 2, 3], dropped=[1]), cloud([2, 3])).state == "edge_dropped"
    short = verdict(edge([1, 2, 3]), cloud([1, 3]))
    assert short.state == "mismatch"
    assert short.differences["events"] == {"edge": 3, "cloud": 2} and short.differences["objects|person"] == {"edge": 3, "cloud": 2}
    assert short.differences["seqs"] == {"edge": [1, 3], "cloud": [1, 3]}
    assert verdict(edge([1, 2, 3]), cloud([1, 3]), age_ms=GRACE // 2).state == "pending"  # rows still on their way


def test_same_count_other_seqs_or_other_cells_is_a_mismatch() -> None:
    assert set(verdict(edge([1, 2, 3]), cloud([1, 2, 4])).differences) == {"seq_digest", "seqs"}
    moved = cloud([1, 2, 3])
    moved.totals = {"objects|car": 3}
    assert set(verdict(edge([1, 2, 3]), moved).differences) == {"objects|car", "objects|person", "seqs"}
