"""A compliance reviewer follows a hot-path alert from its Slack message to the Dagster UI.

Real parts: a ``dagster-webserver`` subprocess on the project's code location
(``workspace.yaml``) and a Dagster instance in a temporary ``DAGSTER_HOME``, the Slack
simulator behind slack-sdk, the outbox dispatcher, and headless Chromium via Selenium. The hot
path's lineage use case (``risk_monitor.lineage``) records an alert, reports its evaluation as a
``live_limit_status`` event and edits the Slack message with the event's link; the browser opens
that link, as the reviewer clicks it, and must show the event with its input data versions.

Set ``RISK_MONITOR_LINEAGE_SCREENSHOTS=<dir>`` to keep the screenshots (docs/img/lineage-*.png,
used by docs/audit.md, are made with ``RISK_MONITOR_LINEAGE_SCREENSHOTS=docs/img``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from slack_sdk import WebClient

from risk_monitor import application
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.dagster_catalog import LIVE_ASSET, DagsterCatalog
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor.lineage import HotPathLineage, link_slack_messages
from risk_monitor.platform.code_version import code_version
from risk_monitor_tests.fixtures.service import free_port, wait_until
from risk_monitor_tests.fixtures.storage import make_result, sqlite_url
from risk_sim.slack import SlackSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
#: the code location loads in a few seconds on an idle machine; CI machines are busy
START_S = 180.0
WAIT_S = 60.0
CHANNELS = {"info": "#risk-info", "warning": "#risk-warn", "critical": "#risk-critical"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _source(kind: SourceKind, venue: str, rows: int) -> SourceStatus:
    return SourceStatus(kind=kind, venue=venue, account="main", ok=True, as_of=T0, rows=rows)


def desk_snapshot() -> RiskSnapshot:
    """Two venues' quotes, positions and balances, one custodian: what the hot path saw."""
    quotes = pd.DataFrame([
        {"venue": "binance", "instrument": "BTC/USDT:USDT", "last": 110_000.0, "timestamp": T0},
        {"venue": "okx", "instrument": "ETH/USDT:USDT", "last": 3_000.0, "timestamp": T0}])
    positions = pd.DataFrame([
        {"venue": "binance", "instrument": "BTC/USDT:USDT", "contracts": 10.0},
        {"venue": "okx", "instrument": "ETH/USDT:USDT", "contracts": 200.0}])
    balances = pd.DataFrame([
        {"venue": "binance", "asset": "USDT", "total": 2_500_000.0},
        {"venue": "okx", "asset": "USDT", "total": 1_000_000.0},
        {"venue": "fireblocks", "asset": "BTC", "total": 40.0}])
    return RiskSnapshot(
        prices=Collected(quotes, (_source(SourceKind.MARKET, "binance", 1),
                                  _source(SourceKind.MARKET, "okx", 1))),
        positions=Collected(positions, (_source(SourceKind.EXCHANGE, "binance", 1),
                                        _source(SourceKind.EXCHANGE, "okx", 1))),
        balances=Collected(balances, (_source(SourceKind.EXCHANGE, "binance", 1),
                                      _source(SourceKind.EXCHANGE, "okx", 1),
                                      _source(SourceKind.CUSTODIAN, "fireblocks", 1))),
        now=T0)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``dagster-webserver`` on the project's code location and a fresh instance."""
    home = tmp_path_factory.mktemp("dagster_home")
    # the UI greets a new instance served from 127.0.0.1 with a newsletter dialog, opened on
    # a 1 s timer: under contention it opened after a "skip it" step had looked for it and
    # then covered the page (a flaky timeout). Turned off in this instance's settings, so the
    # reviewer's pages never show it (``nux: enabled: false``, Dagster's own switch)
    (home / "dagster.yaml").write_text(
        (REPO / "dagster.yaml").read_text().rstrip("\n") + "\nnux:\n  enabled: false\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(home)
    log = home / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1",
             "-p", str(port), "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited:\n{log.read_text()[-3000:]}")
            return httpx.get(f"{url}/server_info", timeout=5).status_code == 200

        wait_until(up, timeout=START_S, interval=0.5, message="dagster-webserver up")

        def nux() -> Any:  # GraphQL answers once the code location is loaded: slow when busy
            try:
                return httpx.post(f"{url}/graphql", json={"query": "{ shouldShowNux }"},
                                  timeout=10).json().get("data")
            except (httpx.HTTPError, ValueError):
                return None

        asked = wait_until(nux, timeout=START_S, interval=1.0, message="GraphQL answering")
        assert asked == {"shouldShowNux": False}  # no welcome dialog
        saved = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(home)
        try:
            with dg.DagsterInstance.get() as instance:
                yield {"url": url, "instance": instance, "home": home}
        finally:
            if saved is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = saved
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _page_text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def _screenshot(browser: WebDriver, name: str) -> None:
    folder = os.environ.get("RISK_MONITOR_LINEAGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(Path(folder) / name))


def _event_button(message: dict[str, Any]) -> str | None:
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["text"]["text"] == "Dagster event":
                    return str(element["url"])
    return None


def test_from_the_slack_message_to_the_dagster_event_and_its_inputs(
        dagster_ui: dict[str, Any], slack_sim: SlackSimulator, browser: WebDriver,
        tmp_path: Path) -> None:
    ui, instance = dagster_ui["url"], dagster_ui["instance"]
    storage = Storage.open(sqlite_url(tmp_path))
    notifier = SlackNotifier(WebClient(token=slack_sim.token, base_url=slack_sim.api_base,
                                       timeout=5), CHANNELS, dagster_ui_url=ui)
    dispatcher = OutboxDispatcher(storage.engine, notifier)
    lineage = HotPathLineage(DagsterCatalog(instance, ui))
    links = link_slack_messages(lineage, dispatcher)
    assert links is not None
    try:
        report = SimpleNamespace(snapshot=desk_snapshot(), config_version="limits-v7")
        context = {"source": "service", "instance_id": "risk-monitor-7f3a", "trigger": "tick",
                   "evaluated_at": T0.isoformat(), "limit_config_version": "limits-v7",
                   "code_version": code_version(),
                   **lineage.context(report)}  # type: ignore[arg-type]
        raised = application.raise_alerts(
            storage, [make_result("BREACH", T0, limit_id="binance_btc_notional",
                                  scope="venue:binance|instrument:BTC/USDT:USDT")],
            now=T0, policy=AlertPolicy(), context=context)
        notes = list(raised.plan.notifications)
        assert dispatcher.dispatch_once().sent == 1  # the desk hears first
        url = lineage.after_commit(context, notes)
        assert url is not None
        [message] = slack_sim.messages
        link = wait_until(lambda: _event_button(message), timeout=WAIT_S,
                          message="the Slack message edited with the Dagster event link")
        assert link == url
    finally:
        links.stop()
        storage.close()

    versions = context["lineage_digest"].versions  # the digest the alerts seal holds them
    browser.get(link)  # the reviewer clicks "Dagster event" in Slack
    wanted = [LIVE_ASSET, "input/market_prices",
              versions["market_prices"]["data_version"],
              versions["market_prices"]["venues"]["okx"]["data_version"],
              versions["exchange_positions"]["data_version"], "limits-v7",
              notes[0].correlation_id, "risk-monitor-7f3a"]
    text = wait_until(lambda: (t := _page_text(browser)) and all(w in t for w in wanted) and t,
                      timeout=START_S, interval=0.5,
                      message=f"the event page showing {wanted} "
                              f"(page: {_page_text(browser)[:800]!r})")
    assert "input/custodian_balances/fireblocks" in text
    assert "Join the Dagster community" not in _page_text(browser)
    browser.set_window_size(1600, 1500)  # the whole metadata table in one picture
    _screenshot(browser, "lineage-event.png")
    browser.set_window_size(1440, 1000)

    browser.get(f"{ui}/assets/{LIVE_ASSET}?view=lineage&lineageScope=upstream")
    upstream = ["market_prices", "exchange_positions", "exchange_balances",
                "custodian_balances", "limit_config"]
    wait_until(lambda: all(u in _page_text(browser) for u in upstream), timeout=WAIT_S,
               interval=0.5, message=f"the lineage view showing {upstream}")
    assert "Join the Dagster community" not in _page_text(browser)
    _screenshot(browser, "lineage-graph.png")
