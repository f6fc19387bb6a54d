"""The shipped Grafana dashboard loads, and every panel's SQL runs on the real schema."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runtime.settings import REPO_ROOT
from tests.support import Stack

pytestmark = pytest.mark.integration

GRAFANA = REPO_ROOT / "deploy" / "grafana"


def expand_macros(sql: str) -> str:
    """Grafana's PostgreSQL macros as Grafana expands them, for a 6 h range."""
    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)", r"\1 BETWEEN now() - interval '6 hours' AND now()", sql)
    assert "$" not in sql, f"a macro or variable this test does not expand: {sql}"
    return sql


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "fleet.json").read_text())


def test_dashboard_and_provisioning_fit_together() -> None:
    board = dashboard()
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "postgres.yaml").read_text())["datasources"][0]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fleetsight.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in compose["volumes"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("fleet overview", "class", "crossings", "occupancy", "camera status", "alerts"):
        assert topic in titles
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["targets"] and all(t["rawSql"].strip() for t in panel["targets"])


async def fill(stack: Stack) -> None:
    """A little of everything, through the same aggregation code and sink the pipeline uses."""
    import time

    from sqlalchemy.ext.asyncio import create_async_engine

    from runtime.settings import Webhook
    from schemas import geometry
    from schemas.codec import encode, validate
    from sinks.notifier import deliveries, queue
    from sinks.reconcile import Reconciler
    from sinks.writer import upsert
    from streams.aggregate import Incoming, MinuteAggregator
    from streams.status import AlertConfig, FleetStatus

    now = int(time.time() * 1000)
    # The door is a site entrance: the site panels have rows.
    doc = geometry.normalized([("door", (0.1, 0.5), (0.9, 0.5), "in")], [("till", [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)])])
    version = geometry.version(doc)
    bodies = [
        ("geometry", {"version": version, **doc}),
        ("track.start", {"track_id": 1, "class": "person", "confidence": 0.9}),
        ("track.end", {"track_id": 1, "class": "person", "dwell_s": 4.0, "max_confidence": 0.9}),
        ("line.cross", {"track_id": 1, "class": "person", "line": "door", "direction": "in", "geometry": version}),
        ("zone.exit", {"track_id": 1, "class": "person", "zone": "till", "dwell_s": 2.0, "geometry": version}),
        ("occupancy", {"zone": "till", "counts": {"person": 2}, "geometry": version}),
        *[("health", {"uptime_s": 1.0, "frames": 600, "frames_skipped": 10, "inference_ms_p95": 40.0, "outbox_depth": d}) for d in (200, 300, 400)],
    ]
    records = [
        Incoming(0, now, encode([validate({"v": 1, "camera_id": "cam-g", "site": "s", "seq": i, "ts": now - 60_000 + i, "type": t, "data": d})]))
        for i, (t, d) in enumerate(bodies, start=1)
    ]
    records.append(Incoming(0, now, encode([validate({"v": 1, "camera_id": "cam-g", "site": "s", "seq": 99, "ts": now - 30 * 3600_000, "type": "health", "data": {"uptime_s": 1.0}})])))
    result = MinuteAggregator(24 * 3600_000).process(records, {})
    rows = list(result.rows.values()) + FleetStatus(AlertConfig(), lambda: now).observe({}, result.events, result.late)
    engine = create_async_engine(stack.settings.database_url)
    try:
        await upsert(engine, rows)
        # The reconciler's verdicts (cam-g sends no ledger: pending), as the sink keeps them.
        await Reconciler(engine, 1.0, 3600.0, 60.0, write_rows=lambda rows: upsert(engine, rows)).once()
        # The notifier's queue: the backlog alert for a webhook, not yet delivered.
        hook = Webhook(name="ops", url="https://hooks.example/ops", secret_file="/nonexistent")
        alerts = [r for r in rows if r.table == "alerts"]
        assert alerts
        await queue(engine, [d for r in alerts for d in deliveries(r.values, [hook])])
    finally:
        await engine.dispose()


async def test_every_panel_query_runs_on_the_real_schema(stack: Stack) -> None:
    await fill(stack)
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            rows = await stack.query(expand_macros(target["rawSql"]))
            assert rows, f"{panel['title']}: no rows"
            if target["format"] == "time_series":
                assert {"time", "metric", "value"} <= set(rows[0].keys()), panel["title"]


async def test_the_readmes_answers_to_what_the_rollups_do_not_answer_run_on_the_real_schema(stack: Stack) -> None:
    await fill(stack)
    text = (REPO_ROOT / "README.md").read_text()
    questions = re.findall(r"```sql\n\s*-- question: ([\w-]+)\n(.*?)```", text, re.S)
    assert len(questions) == 4
    for name, sql in questions:
        rows = await stack.query(sql.strip().replace("'cam-entrance'", "'cam-g'"))
        assert rows and all(v is not None for v in rows[0].values()), name
