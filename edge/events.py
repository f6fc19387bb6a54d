"""What the edge's pure cores emit: an event before the outbox gives it a seq.

Its own module so that the scene logic (``edge/scene.py``), a pure core,
does not import the SQLite outbox to name its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NewEvent:
    """An event before it has a seq."""

    ts: int
    type: str
    data: dict[str, Any]
