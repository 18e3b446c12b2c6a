"""Structure of the monitoring files: deploy/prometheus/*.yml and deploy/grafana/atelier.json.

No Prometheus or Grafana is needed: the files parse, every alert is complete, and every Atelier
metric they name is one the code exports (services/api/metrics.py, workers/metrics.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "atelier.json"
METRIC_SOURCES = (ROOT / "services" / "api" / "metrics.py", ROOT / "workers" / "metrics.py")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")
METRIC_NAME = re.compile(r"\batelier_[a-z_]+\b")
REQUIRED_ALERTS = {
    "AtelierQueuedJobTooOld",
    "AtelierJobFailureRate",
    "AtelierNoWorkers",
    "AtelierJobsRunningWithoutProgress",
}


def _exported() -> set[str]:
    """Every series name the code can export (names declared as string literals, with their suffixes)."""
    declared = {m for path in METRIC_SOURCES for m in re.findall(r'"(atelier_[a-z_]+)"', path.read_text())}
    return {name + suffix for name in declared for suffix in SUFFIXES}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["expr"].strip() and rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_scrape_config_names_the_jobs_the_alerts_use() -> None:
    doc = yaml.safe_load(SCRAPE.read_text())
    jobs = {config["job_name"] for config in doc["scrape_configs"]}
    assert jobs == {"atelier-api", "atelier-workers"}
    assert doc["rule_files"] == [ALERTS.name]
    used = {job for rule in _rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert used <= jobs


def test_the_dashboard_loads_and_has_every_panel() -> None:
    doc = json.loads(DASHBOARD.read_text())
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " / ".join(p["title"] for p in panels).lower()
    for needed in ("request rate", "p50, p99", "5xx", "queue depth", "oldest queued", "finished", "steps/s",
                   "images/s", "duration", "checkpoint upload", "device memory"):  # fmt: skip
        assert needed in titles, needed
    for panel in panels:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_every_metric_named_is_exported() -> None:
    exported = _exported()
    named = {m for text in [*_dashboard_exprs(), *(r["expr"] for r in _rules())] for m in METRIC_NAME.findall(text)}
    assert named, "the files name no Atelier metric"
    assert named <= exported, sorted(named - exported)
