"""``fleetsight audit`` for people on an 80-column pipe, and for scripts."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime

from fleetsight.audit import CameraAudit, machine_readable, render_table

ROWS = [
    ["cam-entrance-12", "depot-north", "1380", "0", "3", "0", "12-03 10:59", "+0.1 s", "0"],
    ["cam-loading-bay-west-2", "plant-a", "100000", "12", "3", "2", "12-03 10:58", "-12.4 s", "61"],
]


def test_every_header_is_whole_at_80_columns() -> None:
    lines = render_table(ROWS, 80)
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for header in ("camera", "site", "match", "edge", "dropped", "pending", "mismatch", "last match", "clock", "skewed"):
        assert header in text
    assert "…" not in text
    # Too wide for one line a camera: its id and site on a line, its figures under them.
    i = lines.index("cam-loading-bay-west-2 (plant-a)")
    assert lines[i + 1].split() == ["100000", "12", "3", "2", "12-03", "10:58", "-12.4", "s", "61"]


def test_a_wide_terminal_gets_one_line_a_camera() -> None:
    lines = render_table(ROWS, 140)
    assert lines[0].split()[:2] == ["camera", "site"]
    assert lines[-1].split()[:3] == ["cam-loading-bay-west-2", "plant-a", "100000"]


def test_json_and_csv_hold_the_same_figures() -> None:
    cameras = [CameraAudit("cam-1", "depot", Counter(match=58, mismatch=2), 1764756000000, -0.4, 0)]
    since = datetime(2026, 12, 3, tzinfo=UTC)
    doc = json.loads(machine_readable("json", since, cameras, [], 24, 1, []))
    assert doc["cameras"][0] | {"last_match": None} == {
        "camera_id": "cam-1", "site": "depot", "match": 58, "edge_dropped": 0, "pending": 0, "mismatch": 2, "last_match": None,
        "clock_offset_s": -0.4, "clock_suspect_minutes": 0,
    }
    assert doc["cameras"][0]["last_match"].startswith("2025-12-03T10:00")
    assert doc["rollups"] == {"checked": 24, "pending": 1, "differ": []}
    [row] = list(csv.DictReader(io.StringIO(machine_readable("csv", since, cameras, [], 24, 1, []))))
    assert (row["camera_id"], row["match"], row["mismatch"], row["clock_offset_s"]) == ("cam-1", "58", "2", "-0.4")
