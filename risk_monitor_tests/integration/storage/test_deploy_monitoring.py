"""What ships for monitoring holds against what the service really exports: ``promtool check
metrics`` on the exposition, ``promtool check rules`` on the shipped alerting rules, and every
metric named by a rule or a Grafana panel present in ``/metrics``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from risk_monitor.adapters.prometheus import StoredMetricsCollector
from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.dispatcher import NOTIFIER_UP
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "risk-monitor-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "risk-monitor-dashboard.json"
METRIC = re.compile(r"\brisk_monitor_[a-z0-9_]+\b")


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) must be installed"
    return promtool


@pytest.fixture
def exposition(storage: Storage, clock: FakeClock) -> bytes:
    """Every family the service process registers plus the store collector, with data."""
    import risk_monitor.service.main  # noqa: F401  registers the service's own families
    from risk_monitor.adapters.collection import SOURCE_UP

    evaluate(storage, make_result("WARN", clock()))
    SOURCE_UP.labels(kind="exchange", source="binance:main").set(1)
    NOTIFIER_UP.labels(notifier="slack").set(1)
    collector = StoredMetricsCollector(storage.engine, clock=clock)
    REGISTRY.register(collector)
    try:
        return generate_latest(REGISTRY)
    finally:
        REGISTRY.unregister(collector)


def _exported(exposition: bytes) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition.decode()):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        names.update(sample.name for sample in family.samples)
    return names


def _queries() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    found = {f"rule {r['alert']}": r["expr"] for g in rules["groups"] for r in g["rules"]}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']}/{target['refId']}"] = target["expr"]
    return found


def test_promtool_accepts_the_service_exposition(exposition: bytes) -> None:
    assert b"risk_monitor_source_up{" in exposition  # the collecting process's own gauge
    assert b"risk_monitor_source_last_fetch_ok" in exposition  # the store's, another name
    checked = subprocess.run([_promtool(), "check", "metrics"], input=exposition,
                             capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_promtool_accepts_the_shipped_alerting_rules() -> None:
    checked = subprocess.run([_promtool(), "check", "rules", str(RULES)],
                             capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert b"SUCCESS" in checked.stdout


def test_every_rule_and_panel_names_an_exported_metric(exposition: bytes) -> None:
    exported = _exported(exposition)
    queries = _queries()
    assert len(queries) >= 15
    missing = {where: name for where, expr in queries.items()
               for name in METRIC.findall(expr) if name not in exported}
    assert missing == {}
    assert all(METRIC.search(expr) for expr in queries.values())


def test_the_dashboard_is_provisioning_ready() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert "id" not in dashboard  # Grafana assigns it; a fixed id breaks provisioning
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} \
        == {"${datasource}"}
