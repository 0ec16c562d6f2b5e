"""The dashboard's trading panel in a real browser (headless Chromium via Selenium) against a
real in-process service on PostgreSQL: an operator halts a venue over REST, the desk's order is
checked over gRPC and denied, and the page shows the HALTED state, the DENY decision with its
reason code, and says plainly that nothing could be reconciled yet."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor_tests.fixtures.service import ServiceThread, service_settings

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RED = "rgba(198, 40, 40, 1)"  # --breach
WAIT_S = 20.0


@pytest.fixture(scope="module")
def service(module_postgres_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    settings = service_settings(database_url=module_postgres_url, redis_url=None,
                                tmp=tmp_path_factory.mktemp("trading-panel"))
    running = ServiceThread(settings).start()
    try:
        yield running
    finally:
        running.stop()


def wait(driver: WebDriver, predicate: Any, what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)
                             ).until(predicate)
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S}s waiting for {what}: "
                    f"{driver.find_element(By.ID, 'trading-panel').text[:500]!r}")


def chip(driver: WebDriver, scope: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, f'#trading-states [data-scope="{scope}"]')
    return found[0] if found else None


def test_halt_and_denied_order_show_on_the_trading_panel(service: ServiceThread,
                                                         browser: WebDriver) -> None:
    browser.get(f"{service.rest_url}/?refresh=1")
    # every read of the re-rendered panel happens inside a wait (a stale element is retried)
    state, note = wait(browser, lambda d: (c := chip(d, "global")) is not None
                       and (c.get_attribute("data-state"),
                            d.find_element(By.ID, "recon-note").text),
                       "the global trading state")
    assert state == "ACTIVE"
    assert "not reconciled" in note

    halted = httpx.post(f"{service.rest_url}/v1/trading/state", timeout=10, json={
        "scope": "venue:okx", "state": "HALTED", "reason": "exchange incident",
        "author": "desk-head"})
    assert halted.status_code == 200, halted.text
    with grpc.insecure_channel(service.grpc_target) as channel:
        answer = pb_grpc.RiskMonitorStub(channel).CheckOrder(pb.CheckOrderRequest(
            venue="okx", account="main", instrument="BTC/USDT:USDT", side=pb.SIDE_BUY,
            quantity=0.5, client_order_id="desk-0001"), timeout=30)
    assert not answer.allowed and list(answer.reason_codes) == ["TRADING_HALTED"]

    # the panel re-renders on every refresh: each element is read inside the wait, where a
    # stale element (replaced between find and read) is retried instead of failing the test
    okx_colour, okx_title = wait(browser, lambda d: (c := chip(d, "venue:okx")) is not None
                                 and c.get_attribute("data-state") == "HALTED"
                                 and (c.value_of_css_property("background-color"),
                                      c.get_attribute("title") or ""), "okx HALTED on the page")
    assert okx_colour == RED
    assert "desk-head" in okx_title

    def checked_order(d: WebDriver) -> tuple[list[str], bool] | None:
        for r in d.find_elements(By.CSS_SELECTOR, "#orders-table tbody tr"):
            if "desk-0001" in r.text:
                return ([c.text for c in r.find_elements(By.TAG_NAME, "td")],
                        bool(r.find_elements(By.CSS_SELECTOR, "td.decision-deny")))
        return None

    cells, denied = wait(browser, checked_order, "the checked order")
    assert cells[1:4] == ["okx", "BTC/USDT:USDT", "buy"]
    assert cells[5:8] == ["DENY", "TRADING_HALTED", "HALTED"]
    assert denied
    assert wait(browser, lambda d: d.find_element(By.ID, "fills-empty").is_displayed(),
                "no fills, said")  # no stream: said

    resumed = httpx.post(f"{service.rest_url}/v1/trading/state", timeout=10, json={
        "scope": "venue:okx", "state": "ACTIVE", "author": "desk-head"})
    assert resumed.status_code == 200
    wait(browser, lambda d: (c := chip(d, "venue:okx")) is None
         or c.get_attribute("data-state") == "ACTIVE", "okx back to ACTIVE")
