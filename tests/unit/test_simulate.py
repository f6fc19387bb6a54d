"""The simulator says what rate it made, and says so loudly when it fell short."""

from __future__ import annotations

from edge.simulate import SimulatorReport


def test_the_summary_gives_the_rate_made_against_the_rate_asked() -> None:
    kept = SimulatorReport(generated=1000, drained=True, asked_rate=50, achieved_rate=49.2)
    assert not kept.short
    assert "49.2 events/s per camera of 50 asked;" in kept.summary()
    short = SimulatorReport(generated=280, drained=True, asked_rate=50, achieved_rate=14.0)
    assert short.short
    assert "of 50 asked (only 28%: this box could not keep up)" in short.summary()
