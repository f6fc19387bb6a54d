"""A self-contained HTML report of what the cameras counted, from SQL.

One file, nothing fetched when it is opened: charts are inline SVG, frames
are inline JPEG (data: URLs), styles are inline. Open it in any browser or
mail it. ``python -m devtools demo`` writes one; ``build_report`` works on any
FleetSight database.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

PALETTE = ("#2f6fdf", "#e8743b", "#19a979", "#ed4a7b", "#945ecf", "#13a4b4", "#525df4", "#bf399e")

# The queries the report is made of; the demo prints them too, so readers can run them in psql.
QUERIES = {
    "objects per minute": """
SELECT camera_id, minute, sum(objects) AS objects
FROM camera_minute_counts WHERE camera_id = ANY($1) AND minute >= $2
GROUP BY camera_id, minute ORDER BY minute, camera_id""",
    "line crossings": """
SELECT camera_id, line, sum(crossings_in) AS crossings_in, sum(crossings_out) AS crossings_out
FROM line_minute_crossings WHERE camera_id = ANY($1) AND minute >= $2
GROUP BY camera_id, line ORDER BY camera_id, line""",
    "zone occupancy per minute": """
SELECT camera_id, zone, minute, max(occupancy_max) AS occupancy_max,
       sum(occupancy_mean * occupancy_samples) / nullif(sum(occupancy_samples), 0) AS occupancy_mean,
       sum(entries) AS entries
FROM zone_minute_stats WHERE camera_id = ANY($1) AND minute >= $2
GROUP BY camera_id, zone, minute ORDER BY minute, camera_id, zone""",
    "objects by class": """
SELECT camera_id, object_class, sum(objects) AS objects
FROM camera_minute_counts WHERE camera_id = ANY($1) AND minute >= $2
GROUP BY camera_id, object_class HAVING sum(objects) > 0 ORDER BY camera_id, objects DESC""",
    "camera health per minute": """
SELECT camera_id, minute, frames, frames_skipped, inference_ms_p50
FROM camera_minute_health WHERE camera_id = ANY($1) AND minute >= $2 ORDER BY minute, camera_id""",
    "people inside the site per minute": """
SELECT site, minute, people_in, people_out, inside, complete
FROM site_minute_occupancy WHERE site IN (SELECT site FROM camera_status WHERE camera_id = ANY($1)) AND minute >= $2
ORDER BY site, minute""",
    "camera status": """
SELECT camera_id, site, online, last_heard_at, outbox_backlog, dropped_events, seq_gaps, model_version
FROM camera_status WHERE camera_id = ANY($1) ORDER BY camera_id""",
}


@dataclass
class ReportData:
    cameras: list[str]
    rows: dict[str, list[asyncpg.Record]] = field(default_factory=dict)


async def fetch(dsn: str, cameras: Sequence[str], since: datetime | None = None) -> ReportData:
    """Run every report query for ``cameras``, minutes from ``since`` on (default: all)."""
    since = since or datetime(1970, 1, 1, tzinfo=UTC)
    conn = await asyncpg.connect(dsn)
    try:
        data = ReportData(list(cameras))
        for name, sql in QUERIES.items():
            args = [list(cameras), since] if "$2" in sql else [list(cameras)]
            data.rows[name] = await conn.fetch(sql, *args)
        return data
    finally:
        await conn.close()


# --- SVG charts -----------------------------------------------------------------------

W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 260, 48, 230, 16, 36
TICKS = 5


def _nice_max(value: float) -> float:
    """The top of the axis: TICKS steps of 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    raw = value / TICKS
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if raw <= m * power)
    return step * TICKS


def _frame(title: str, ymax: float, labels: list[str]) -> list[str]:
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    out = [f'<svg class="chart" data-chart="{html.escape(title)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">',
           f"<title>{html.escape(title)}</title>"]
    for i in range(TICKS + 1):
        y = TOP + plot_h - plot_h * i / TICKS
        value = round(ymax * i / TICKS, 6)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6eb"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{value:g}</text>')
    every = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + plot_w * (i + 0.5) / max(1, len(labels))
            out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="tick">{html.escape(label)}</text>')
    return out


def _legend(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        y = TOP + 8 + i * 18
        out.append(f'<rect x="{W - RIGHT + 14}" y="{y - 9}" width="11" height="11" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(f'<text x="{W - RIGHT + 30}" y="{y + 1}" class="legend">{html.escape(name)}</text>')
    return out


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    """Grouped bars: one group per label, one bar per series."""
    ymax = _nice_max(max((v for values in series.values() for v in values), default=0))
    out = _frame(title, ymax, labels)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    group = plot_w / max(1, len(labels))
    bar = group * 0.8 / max(1, len(series))
    for s, (name, values) in enumerate(series.items()):
        for i, value in enumerate(values):
            h = plot_h * value / ymax
            x = LEFT + i * group + group * 0.1 + s * bar
            out.append(f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
                       f'fill="{PALETTE[s % len(PALETTE)]}"><title>{html.escape(name)} {html.escape(labels[i])}: {value:g}</title></rect>')
    return "\n".join(out + _legend(list(series)) + ["</svg>"])


def line_chart(title: str, labels: list[str], series: dict[str, list[float | None]]) -> str:
    """One polyline per series over the labels (None: no point)."""
    ymax = _nice_max(max((v for values in series.values() for v in values if v is not None), default=0))
    out = _frame(title, ymax, labels)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    for s, (name, values) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        points = [(LEFT + plot_w * (i + 0.5) / max(1, len(labels)), TOP + plot_h - plot_h * v / ymax) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>')
        for (x, y), v in zip(points, [v for v in values if v is not None]):
            out.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>{html.escape(name)}: {v:.2f}</title></circle>')
    return "\n".join(out + _legend(list(series)) + ["</svg>"])


def _minute_label(minute: datetime) -> str:
    return f"{minute.astimezone(UTC):%H:%M}"


# --- the page -------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; margin: 2rem auto; max-width: 980px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #e3e6eb; }
.sub { color: #5b6475; } .tick { font-size: 11px; fill: #5b6475; } .legend { font-size: 12px; fill: #1d2330; }
table { border-collapse: collapse; } td, th { padding: .25rem .7rem; border-bottom: 1px solid #e3e6eb; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .ok { color: #19a979; } .bad { color: #d43c3c; }
.frames { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; border-radius: 4px; } figcaption { color: #5b6475; }
pre { background: #f5f6f8; padding: .6rem; overflow-x: auto; font-size: 12px; }
"""

# Runs when the page is opened: says whether every chart has been laid out and
# every frame decoded (the test reads it back from a headless browser).
SELF_CHECK = """
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')].filter(s => s.getBBox().width > 0).length;
  const images = [...document.querySelectorAll('img.frame')].filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.getElementById('render-check');
  out.textContent = JSON.stringify({charts, images});
  out.dataset.done = 'yes';
});
"""


def render(data: ReportData, frames: dict[str, bytes], title: str = "FleetSight report", notes: str = "") -> str:
    """The HTML page for ``data`` and one annotated JPEG per camera in ``frames``."""
    r = data.rows
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='sub'>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from PostgreSQL; "
             f"cameras: {html.escape(', '.join(data.cameras))}. {html.escape(notes)}</p>"]

    minutes = sorted({row["minute"] for row in r["objects per minute"]})
    labels = [_minute_label(m) for m in minutes]
    counts = {c: [0.0] * len(minutes) for c in data.cameras}
    for row in r["objects per minute"]:
        counts[row["camera_id"]][minutes.index(row["minute"])] = float(row["objects"])
    total = int(sum(sum(v) for v in counts.values()))
    parts += ["<h2>Objects per minute</h2>",
              f"<p>{total} objects (tracks) counted; event time, UTC.</p>",
              bar_chart("objects per minute", labels, counts)]

    crossings = r["line crossings"]
    line_labels = [f"{row['camera_id']} / {row['line']}" for row in crossings]
    parts += ["<h2>Line crossings</h2>",
              bar_chart("line crossings", line_labels, {
                  "in": [float(row["crossings_in"]) for row in crossings],
                  "out": [float(row["crossings_out"]) for row in crossings],
              })]

    occupancy = r["zone occupancy per minute"]
    zone_minutes = sorted({row["minute"] for row in occupancy})
    zones: dict[str, list[float | None]] = {}
    for row in occupancy:
        key = f"{row['camera_id']} / {row['zone']}"
        zones.setdefault(key, [None] * len(zone_minutes))[zone_minutes.index(row["minute"])] = (
            float(row["occupancy_mean"]) if row["occupancy_mean"] is not None else None
        )
    parts += ["<h2>Zone occupancy</h2>", "<p>Mean number of objects inside each zone, per minute.</p>",
              line_chart("zone occupancy", [_minute_label(m) for m in zone_minutes], zones)]

    health = r["camera health per minute"]
    health_minutes = sorted({row["minute"] for row in health})
    frames_series = {c: [0.0] * len(health_minutes) for c in data.cameras}
    for row in health:
        frames_series[row["camera_id"]][health_minutes.index(row["minute"])] = float(row["frames"])
    parts += ["<h2>Cameras</h2>", "<p>Frames each node read per minute, from its health reports (a gap is a camera down).</p>",
              bar_chart("frames per minute", [_minute_label(m) for m in health_minutes], frames_series)]
    parts += ["<table><tr><th>camera</th><th>site</th><th>state</th><th>last heard (UTC)</th>"
              "<th>backlog</th><th>dropped</th><th>seq gaps</th><th>model</th><th>objects</th></tr>"]
    by_class: dict[str, list[str]] = {}
    for row in r["objects by class"]:
        by_class.setdefault(row["camera_id"], []).append(f"{row['objects']} {row['object_class']}")
    for row in r["camera status"]:
        state = "<span class='ok'>online</span>" if row["online"] else "<span class='bad'>offline</span>"
        cells = [html.escape(row["camera_id"]), html.escape(row["site"]), state, f"{row['last_heard_at']:%H:%M:%S}"]
        cells += [f"<td class='num'>{'' if v is None else v}</td>" for v in (row["outbox_backlog"], row["dropped_events"], row["seq_gaps"])]
        cells += [html.escape(row["model_version"] or "?"), html.escape(", ".join(by_class.get(row["camera_id"], [])))]
        parts.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")

    parts.append("<h2>What each camera sees</h2><p class='sub'>Annotated on the edge (lines, zones, tracked boxes); "
                 "frames never left the machine in the pipeline itself.</p><div class='frames'>")
    for camera in data.cameras:
        if camera in frames:
            src = "data:image/jpeg;base64," + base64.b64encode(frames[camera]).decode()
            parts.append(f"<figure><img class='frame' alt='{html.escape(camera)}' src='{src}'><figcaption>{html.escape(camera)}</figcaption></figure>")
    parts.append("</div>")

    parts.append("<h2>The SQL behind it</h2>")
    for name, sql in QUERIES.items():
        parts.append(f"<p>{html.escape(name)}</p><pre>{html.escape(sql.strip())}</pre>")
    parts.append(f"<p class='sub'>Render check: <span id='render-check'>not run</span></p><script>{SELF_CHECK}</script></body></html>")
    return "\n".join(parts)


def latest_frame(debug_dir: Path, camera_id: str) -> bytes | None:
    """The newest annotated frame a node wrote for ``camera_id`` (``--debug-dir``)."""
    files = sorted(debug_dir.glob(f"{camera_id}-*.jpg"), key=lambda p: p.stat().st_mtime)
    return files[-1].read_bytes() if files else None


async def write_report(
    dsn: str, cameras: Sequence[str], frames: dict[str, bytes], path: Path, notes: str = "", since: datetime | None = None
) -> Path:
    """Query, render and write the report; returns its path."""
    data = await fetch(dsn, cameras, since)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, frames, notes=notes))
    return path
