"""The pipeline-health dashboard only asks for metrics our processes export."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import REGISTRY

import edge.metrics  # noqa: F401  (each registers its stage's metrics)
import sinks.metrics  # noqa: F401
import streams.metrics  # noqa: F401
from runtime.settings import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"


def exported_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names |= {sample.name for sample in family.samples}
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        names.add(family.name)
    return names


def test_every_panel_uses_exported_metrics_and_the_provisioned_source() -> None:
    board = json.loads((GRAFANA / "dashboards" / "pipeline.json").read_text())
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "postgres.yaml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    names = exported_names()
    assert len(board["panels"]) >= 8
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == prometheus["uid"]
        for target in panel["targets"]:
            used = set(re.findall(r"fleetsight_[a-z_]+", target["expr"]))
            assert used and used <= names, (panel["title"], used - names)


def test_prometheus_scrapes_each_process_on_its_port() -> None:
    from runtime.settings import Settings

    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    s = Settings()
    assert {f"bridge:{s.bridge_metrics_port}", f"worker:{s.worker_metrics_port}", f"sink:{s.sink_metrics_port}",
            f"edge-sim:{s.simulator_metrics_port}", f"notifier:{s.notifier_metrics_port}"} == targets


def test_every_alert_rule_uses_exported_metrics() -> None:
    """A renamed metric would leave its rule silent for good: promtool's tests feed the rules their own series."""
    rules = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    names = exported_names()
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 9
    for expr in exprs:
        used = set(re.findall(r"fleetsight_[a-z_]+", expr))
        # The dead-letter rule matches its counters by a name pattern: spelled out here.
        used = {u for u in used if not u.endswith("_")}
        if "fleetsight_(bridge|worker)_deadletters_total" in expr:
            used |= {"fleetsight_bridge_deadletters_total", "fleetsight_worker_deadletters_total"}
        assert used <= names, (expr, used - names)
