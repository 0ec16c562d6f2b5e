"""The Alertmanager sink against a real Alertmanager (Debian ``prometheus-alertmanager``,
started here on free loopback ports with a temporary config and ``--storage.path``): an alert
raised into the outbox shows up in ``GET /api/v2/alerts`` with its labels and annotations, an
escalation replaces its label set, a resolve ends it, each state is pushed once, and a push that
fails is retried until Alertmanager takes it. A missing binary fails, never skips."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from risk_monitor.adapters.alertmanager import ALERTNAME, AlertmanagerClient, AlertmanagerSink
from risk_monitor.adapters.sql import BackoffPolicy, Storage
from risk_monitor.adapters.sql.codec import utc_now
from risk_monitor_tests.fixtures.service import free_port, wait_until
from risk_monitor_tests.fixtures.storage import evaluate, make_result

pytestmark = pytest.mark.integration

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or BINARY
    assert Path(binary).exists(), f"{BINARY} missing: apt-get install prometheus-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
                   timeout=30, message="alertmanager ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _ours(url: str, fingerprint_labels: dict[str, str]) -> list[dict[str, Any]]:
    """Active alerts in Alertmanager whose labels include ``fingerprint_labels``."""
    found = AlertmanagerClient(url).alerts()
    return [a for a in found if a["status"]["state"] == "active"
            and all(a["labels"].get(k) == v for k, v in fingerprint_labels.items())]


def _sink(storage: Storage, url: str) -> AlertmanagerSink:
    return AlertmanagerSink(storage.engine, AlertmanagerClient(url, timeout_s=5),
                            ui_url="http://dagster.test:3000",
                            dashboard_url="https://risk.example/dashboard", resend_s=60,
                            backoff=BackoffPolicy(initial_s=0.2, max_s=1.0, jitter=0.0))


def test_an_alert_shows_up_escalates_and_resolves_in_alertmanager(
        pg_storage: Storage, alertmanager: str) -> None:
    storage = Storage.on(pg_storage.engine)  # real time: Alertmanager judges endsAt by it
    sink = _sink(storage, alertmanager)
    series = {"alertname": ALERTNAME, "limit_id": "max_notional", "scope": "portfolio"}

    evaluate(storage, make_result("WARN", utc_now()))
    assert sink.sync_once().pushed == 1
    (warn,) = wait_until(lambda: _ours(alertmanager, series), timeout=10,
                         message="the WARN alert in alertmanager")
    assert warn["labels"] == {**series, "severity": "warning", "status": "WARN",
                              "kind": "max_notional"}
    notes = warn["annotations"]
    assert notes["value"] == "850 USD" and notes["breach_level"] == "1,000 USD"
    assert notes["headroom"] == "150 USD"
    assert notes["trace"] == f"risk-monitor audit trace {notes['correlation_id']}"
    assert notes["dashboard_url"] == \
        f"https://risk.example/dashboard?alert={notes['correlation_id']}"
    assert warn["generatorURL"] == "http://dagster.test:3000/runs/run-1"

    # nothing new: nothing pushed (each state once; the keep-alive is a minute away)
    again = sink.sync_once()
    assert (again.pushed, again.kept_alive, again.failed) == (0, 0, 0)

    evaluate(storage, make_result("BREACH", utc_now()))
    assert sink.sync_once().pushed == 1
    (breach,) = wait_until(
        lambda: [a for a in _ours(alertmanager, series) if a["labels"]["status"] == "BREACH"],
        timeout=10, message="the BREACH alert")
    assert breach["labels"]["severity"] == "critical"
    wait_until(lambda: [a["labels"]["status"] for a in _ours(alertmanager, series)]
               == ["BREACH"], timeout=10, message="the WARN label set ended")

    evaluate(storage, make_result("OK", utc_now()))
    assert sink.sync_once().pushed == 1
    wait_until(lambda: _ours(alertmanager, series) == [], timeout=10,
               message="the alert resolved in alertmanager")
    assert sink.sync_once().pushed == 0  # a resolved series is not pushed again


def test_a_failed_push_is_retried_until_alertmanager_takes_it(
        pg_storage: Storage, alertmanager: str) -> None:
    storage = Storage.on(pg_storage.engine)
    down = _sink(storage, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    evaluate(storage, make_result("BREACH", utc_now()))
    assert down.sync_once().failed == 1
    assert down.up  # unreachable is an outage, not a configuration error (notifier_up stays 1)
    up = _sink(storage, alertmanager)  # the same outbox and delivery state, Alertmanager back
    wait_until(lambda: up.sync_once().pushed == 1, timeout=10,
               message="the retried push accepted")
    series = {"alertname": ALERTNAME, "limit_id": "max_notional", "status": "BREACH"}
    assert len(wait_until(lambda: _ours(alertmanager, series), timeout=10,
                          message="the BREACH alert")) == 1
    assert up.sync_once().pushed == 0


def test_the_service_pushes_what_any_path_raises(module_postgres_url: str, alertmanager: str,
                                                 tmp_path: Path) -> None:
    """``alertmanager.url`` in the settings: the running service mirrors an alert raised into
    the shared store (here as a Dagster run would) into Alertmanager, beside its file sink."""
    from risk_monitor import application
    from risk_monitor.domain.alerts import AlertPolicy
    from risk_monitor_tests.fixtures.service import ServiceThread, service_settings

    settings = service_settings(database_url=module_postgres_url, redis_url=None, tmp=tmp_path,
                                alertmanager={"url": alertmanager, "poll_s": 0.2})
    service = ServiceThread(settings).start()
    storage = Storage.open(module_postgres_url, run_migrations=False)
    try:
        at = utc_now()
        application.raise_alerts(storage, [make_result("BREACH", at, limit_id="svc_limit")],
                               now=at, policy=AlertPolicy(), context={"run_id": "run-9"})
        series = {"alertname": ALERTNAME, "limit_id": "svc_limit", "status": "BREACH"}
        (alert,) = wait_until(lambda: _ours(alertmanager, series), timeout=30,
                              message="the service's sink pushed the alert")
        assert alert["generatorURL"].endswith("/runs/run-9")
        wait_until(lambda: storage.outbox.rows()[0].status == "sent", timeout=30,
                   message="the file sink got it too")  # Slack/file delivery is independent
    finally:
        service.stop()
        storage.close()
