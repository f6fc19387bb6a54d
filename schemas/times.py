"""Moments as the contract carries them: milliseconds since the epoch, UTC.

One pair of conversions for the whole project; SQL takes aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_ms(moment: datetime) -> int:
    """An aware moment as ms since the epoch."""
    return int(moment.astimezone(UTC).timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """ms since the epoch as an aware UTC datetime (what SQL takes)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
