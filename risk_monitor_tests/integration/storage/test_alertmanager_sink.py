"""The Alertmanager sink against a real Alertmanager (Debian ``prometheus-alertmanager``,
started here on free loopback ports with a temporary config and ``--storage.path``): an alert
raised into the outbox shows up in ``GET /api/v2/alerts`` with its labels and annotations, an
escalation replaces its label set, a resolve ends it, each state is pushed once, and a push that
fails is retried until Alertmanager takes it. A missing binary fails, never skips."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from risk_monitor.adapters.alertmanager import ALERTNAME, AlertmanagerClient, AlertmanagerSink
from risk_monitor.adapters.sql import BackoffPolicy, Storage, create_engine
from risk_monitor.adapters.sql.codec import utc_now
from risk_monitor.adapters.sql.schema import sink_deliveries
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


class AlertmanagerProcess:
    """A real Alertmanager on a fixed loopback port that a test can stop and start again."""

    def __init__(self, tmp_path: Path, port: int | None = None) -> None:
        binary = shutil.which("prometheus-alertmanager") or BINARY
        assert Path(binary).exists(), f"{BINARY} missing: apt-get install prometheus-alertmanager"
        self.binary, self.tmp_path = binary, tmp_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        (tmp_path / "alertmanager.yml").write_text(CONFIG)

    def start(self) -> AlertmanagerProcess:
        with (self.tmp_path / "alertmanager.log").open("a") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.tmp_path / 'alertmanager.yml'}",
                 f"--storage.path={self.tmp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=30, message="alertmanager ready")
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def alertmanager_process(tmp_path: Path) -> Iterator[AlertmanagerProcess]:
    process = AlertmanagerProcess(tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def alertmanager(alertmanager_process: AlertmanagerProcess) -> str:
    return alertmanager_process.url


def _ours(url: str, fingerprint_labels: dict[str, str]) -> list[dict[str, Any]]:
    """Active alerts in Alertmanager whose labels include ``fingerprint_labels``."""
    found = httpx.get(f"{url}/api/v2/alerts", timeout=5).raise_for_status().json()
    return [a for a in found if a["status"]["state"] == "active"
            and all(a["labels"].get(k) == v for k, v in fingerprint_labels.items())]


def _sink(storage: Storage, url: str) -> AlertmanagerSink:
    return AlertmanagerSink(storage.engine, AlertmanagerClient(url, timeout_s=5),
                            ui_url="http://dagster.test:3000",
                            dashboard_url="https://risk.example/dashboard", resend_s=60,
                            backoff=BackoffPolicy(initial_s=0.2, max_s=1.0, jitter=0.0))


def _deliveries(storage: Storage) -> dict[str, tuple[Any, ...]]:
    """The sink's record per series (outbox row delivered, when, attempts, last error): what
    a push, a failed push or no push leaves behind."""
    table = sink_deliveries
    query = sa.select(table.c.fingerprint, table.c.outbox_id, table.c.delivered_at,
                      table.c.attempts, table.c.last_error).where(table.c.sink == "alertmanager")
    with storage.engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(query)}


def _pushed(sink: AlertmanagerSink, storage: Storage) -> bool:
    """One sync; True once every series' latest state was delivered."""
    sink.sync_once()
    found = _deliveries(storage)
    return bool(found) and all(delivered_at is not None and attempts == 0
                               for _, delivered_at, attempts, _ in found.values())


def test_an_alert_shows_up_escalates_and_resolves_in_alertmanager(
        pg_storage: Storage, alertmanager: str) -> None:
    storage = Storage.on(pg_storage.engine)  # real time: Alertmanager judges endsAt by it
    sink = _sink(storage, alertmanager)
    series = {"alertname": ALERTNAME, "limit_id": "max_notional", "scope": "portfolio"}

    evaluate(storage, make_result("WARN", utc_now()))
    sink.sync_once()
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
    delivered = _deliveries(storage)
    assert len(delivered) == 1
    sink.sync_once()
    assert _deliveries(storage) == delivered

    evaluate(storage, make_result("BREACH", utc_now()))
    sink.sync_once()
    (breach,) = wait_until(
        lambda: [a for a in _ours(alertmanager, series) if a["labels"]["status"] == "BREACH"],
        timeout=10, message="the BREACH alert")
    assert breach["labels"]["severity"] == "critical"
    wait_until(lambda: [a["labels"]["status"] for a in _ours(alertmanager, series)]
               == ["BREACH"], timeout=10, message="the WARN label set ended")

    evaluate(storage, make_result("OK", utc_now()))
    sink.sync_once()
    wait_until(lambda: _ours(alertmanager, series) == [], timeout=10,
               message="the alert resolved in alertmanager")
    resolved = _deliveries(storage)
    assert resolved != delivered
    sink.sync_once()
    assert _deliveries(storage) == resolved  # a resolved series is not pushed again


def test_a_failed_push_is_retried_until_alertmanager_takes_it(
        pg_storage: Storage, alertmanager: str) -> None:
    storage = Storage.on(pg_storage.engine)
    down = _sink(storage, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    evaluate(storage, make_result("BREACH", utc_now()))
    down.sync_once()
    ((outbox_id, delivered_at, attempts, error),) = _deliveries(storage).values()
    assert (outbox_id, delivered_at, attempts) == (None, None, 1) and error
    assert down.up  # unreachable is an outage, not a configuration error (notifier_up stays 1)
    up = _sink(storage, alertmanager)  # the same outbox and delivery state, Alertmanager back
    wait_until(lambda: _pushed(up, storage), timeout=10, message="the retried push accepted")
    series = {"alertname": ALERTNAME, "limit_id": "max_notional", "status": "BREACH"}
    assert len(wait_until(lambda: _ours(alertmanager, series), timeout=10,
                          message="the BREACH alert")) == 1
    delivered = _deliveries(storage)
    up.sync_once()
    assert _deliveries(storage) == delivered  # taken once, not pushed again


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
    storage = Storage.on(create_engine(module_postgres_url))
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


def test_alerts_late_for_alertmanager_are_reported_until_it_takes_them(
        pg_storage: Storage, alertmanager: str) -> None:
    """The sink's readiness check (``/readyz`` ``alertmanager_delivery``): a state change not
    taken by Alertmanager within ``overdue_s`` is reported with its age and the last error;
    once Alertmanager has it, the check is clear again. Keep-alives do not count."""
    storage = Storage.on(pg_storage.engine)
    before = utc_now()
    evaluate(storage, make_result("BREACH", before))
    raised = utc_now()
    down = _sink(storage, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    down.sync_once()
    assert [attempts for _, _, attempts, _ in _deliveries(storage).values()] == [1]
    assert down.delivery_status(overdue_s=30)[0]  # late, not yet overdue
    later = _sink(storage, f"http://127.0.0.1:{free_port()}")
    frozen = raised + timedelta(seconds=31)  # an injected clock: 31 s after the change
    later.clock = lambda: frozen
    ok, detail, data = later.delivery_status(overdue_s=30)
    assert not ok and "1 alert(s) overdue for delivery to alertmanager" in detail
    assert data["overdue"] == 1 and data["notifier_up"] is True
    # the change was stamped between ``before`` and ``raised``, whatever the machine's load
    assert 31 - 0.01 <= data["oldest_overdue_age_s"] <= 31 + (raised - before).total_seconds() + 0.01
    assert data["last_error"]  # why it is late
    up = _sink(storage, alertmanager)
    wait_until(lambda: _pushed(up, storage), timeout=10, message="pushed")
    up.clock = later.clock
    assert up.delivery_status(overdue_s=30) == (True, "delivering", up.delivery_status(30)[2])
    assert up.delivery_status(overdue_s=30)[2]["overdue"] == 0


def test_readyz_reports_alerts_overdue_for_the_alertmanager_sink(
        module_postgres_url: str, alertmanager_process: AlertmanagerProcess,
        tmp_path: Path) -> None:
    """The running service: Alertmanager stops, an alert raised meanwhile is reported overdue
    by ``/readyz`` (degraded, still ready: the sink is not critical); Alertmanager comes back on
    its address and the check clears once the alert is there."""
    from risk_monitor import application
    from risk_monitor.domain.alerts import AlertPolicy
    from risk_monitor_tests.fixtures.service import ServiceThread, service_settings

    settings = service_settings(
        database_url=module_postgres_url, redis_url=None, tmp=tmp_path,
        alertmanager={"url": alertmanager_process.url, "poll_s": 0.2},
        alerts={"delivery_overdue_s": 1.0, "retry_initial_s": 0.2, "retry_max_s": 0.5})
    service = ServiceThread(settings).start()
    storage = Storage.on(create_engine(module_postgres_url))

    def sink_check() -> dict[str, Any] | None:
        body = httpx.get(f"{service.rest_url}/readyz", timeout=5).json()
        return next((c for c in body["checks"] if c["name"] == "alertmanager_delivery"), None)

    try:
        wait_until(lambda: (sink_check() or {}).get("ok") is True, timeout=30,
                   message="the sink check present and clear")
        alertmanager_process.stop()
        at = utc_now()
        application.raise_alerts(storage, [make_result("BREACH", at, limit_id="late_limit")],
                                 now=at, policy=AlertPolicy(), context={"run_id": "run-7"})
        late = wait_until(lambda: (c := sink_check()) is not None and not c["ok"] and c,
                          timeout=30, message="/readyz reports the alert overdue")
        assert "overdue for delivery to alertmanager" in late["detail"]
        assert late["data"]["overdue"] == 1
        fingerprint = make_result("BREACH", at, limit_id="late_limit").fingerprint
        assert late["data"]["oldest_overdue_key"].startswith(f"{fingerprint}:")
        assert late["critical"] is False
        response = httpx.get(f"{service.rest_url}/readyz", timeout=5)
        assert response.json()["status"] == "degraded"
        alertmanager_process.start()
        series = {"alertname": ALERTNAME, "limit_id": "late_limit", "status": "BREACH"}
        wait_until(lambda: _ours(alertmanager_process.url, series), timeout=30,
                   message="the retried push reached alertmanager")
        wait_until(lambda: (sink_check() or {}).get("ok") is True, timeout=30,
                   message="/readyz clear again")
    finally:
        service.stop()
        storage.close()
