"""The demo on real video end to end, and its HTML report as a browser renders it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from devtools.demo import DemoOptions, run_demo
from devtools.ports import free_port
from tests.support import Stack

pytestmark = pytest.mark.integration


def render(html: Path, tmp: Path) -> tuple[str, np.ndarray]:
    """The DOM after the page's load handlers ran, and a screenshot, from headless Chromium."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make deps` (Debian package chromium)"
    flags = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-extensions", f"--user-data-dir={tmp / 'chromium'}",
        "--virtual-time-budget=10000", "--window-size=1100,2600", "--hide-scrollbars",
    ]
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    shot = tmp / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=120, check=True)
    return dom, cv2.imread(str(shot))


async def test_demo_counts_exactly_and_its_report_renders_with_charts_and_frames(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    options = DemoOptions(cameras=2, max_frames=150, realtime=False, report=report, workdir=tmp_path / "demo",
                          metrics_port_base=free_port())
    # run_demo checks SQL against the cameras' own outboxes and returns 0 only if they match.
    assert await asyncio.to_thread(run_demo, stack.settings, options) == 0, stack.log_tail()
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    assert text.count("data:image/jpeg;base64,") == 2

    dom, screenshot = render(report, tmp_path)
    check = re.search(r'id="render-check" data-done="yes">([^<]+)<', dom)
    assert check, "the page's load handler did not run"
    assert json.loads(check.group(1)) == {"charts": 4, "images": 2}  # laid out and decoded
    charts = dict(re.findall(r'<svg class="chart" data-chart="([^"]+)"(.*?)</svg>', dom, re.S))
    assert set(charts) == {"objects per minute", "line crossings", "zone occupancy", "frames per minute"}
    assert charts["objects per minute"].count('class="bar"') >= 2  # a bar per camera at least
    assert 'class="bar"' in charts["line crossings"] and 'class="point"' in charts["zone occupancy"]
    assert 'class="bar"' in charts["frames per minute"]
    assert screenshot is not None and screenshot.shape[0] > 2000
    assert screenshot.std() > 20  # not a blank page
    for camera in ("plaza-north", "plaza-west"):
        assert f"<td>{camera}</td>" in dom
    # The plaza's crosswalk is its entrance: the site's people in and out are that line's person crossings.
    site = await stack.query("SELECT sum(people_in) AS i, sum(people_out) AS o FROM site_minute_occupancy WHERE site = 'plaza'")
    line = await stack.query(
        "SELECT sum(crossings_in) AS i, sum(crossings_out) AS o FROM line_minute_crossings "
        "WHERE camera_id = 'plaza-north' AND line = 'crosswalk' AND object_class = 'person'"
    )
    assert line[0]["i"] and (site[0]["i"], site[0]["o"]) == (line[0]["i"], line[0]["o"])
    assert "people inside the site per minute" in dom
