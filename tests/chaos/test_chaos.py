"""A short seeded chaos run in CI: every part killed once, nothing lost, nothing counted twice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.harness import PARTS, Chaos

pytestmark = pytest.mark.chaos


async def test_short_chaos_run_is_exact(chaos_root: Path, media: Path) -> None:
    chaos = Chaos(chaos_root, seed=int(os.environ.get("FLEETSIGHT_CHAOS_SEED", "7")), rate=15.0)
    report = await chaos.run(faults=len(PARTS), gap_s=8, link_cut_s=25, down_s=(2, 5))
    print(report.render())
    if os.environ.get("FLEETSIGHT_SOAK_RESULT"):  # for `make soak`
        worker = [f.recovered_s for f in report.faults if f.part == "worker" and f.recovered_s is not None]
        with open(os.environ["FLEETSIGHT_SOAK_RESULT"], "w") as out:
            json.dump({"failover_s": max(worker, default=None), "lost": report.lost, "double": report.double}, out)
    assert {f.part for f in report.faults} == set(PARTS)
    assert all(f.recovered_s is not None for f in report.faults)
    assert report.events > 1000
    assert report.lost == 0 and report.double == 0, report.render()
    assert report.rollups_differ == 0, report.render()
