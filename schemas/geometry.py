"""A camera's counting geometry (lines and zones) and its version.

The version is a content hash of the normalized geometry: the same lines
and zones give the same version on any node and after any restart, and a
moved point gives a new one. Line, zone and occupancy events carry it, so
the cloud keeps counts of a moved line apart from the old line's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

Point = Sequence[float]


def normalized(
    lines: Iterable[tuple[str, Point, Point] | tuple[str, Point, Point, str | None]], zones: Iterable[tuple[str, Sequence[Point]]],
) -> dict[str, Any]:
    """Lines ``(name, a, b)`` or ``(name, a, b, entrance)`` and zones ``(name, polygon)`` in one canonical form (sorted, rounded).

    ``entrance`` (``"in"`` or ``"out"``: the line's direction that enters the
    site) is in a line's form only where it is set, so a line that is no
    site entrance keeps the version it had before entrances existed.
    """

    def pt(p: Point) -> list[float]:
        return [round(float(p[0]), 4), round(float(p[1]), 4)]

    def line(name: str, a: Point, b: Point, entrance: str | None = None) -> dict[str, Any]:
        return {"name": name, "a": pt(a), "b": pt(b), **({"entrance": entrance} if entrance else {})}

    return {
        "lines": sorted((line(*spec) for spec in lines), key=lambda d: str(d["name"])),
        "zones": sorted(({"name": name, "polygon": [pt(p) for p in poly]} for name, poly in zones), key=lambda d: str(d["name"])),
    }


def version(geometry: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``normalized(...)``."""
    text = json.dumps({"lines": geometry["lines"], "zones": geometry["zones"]}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
