"""The dashboard in a real browser (headless Chromium via Selenium) against the real service.

One in-process ``ServiceApp`` per module on its own PostgreSQL database, reached through a TCP
proxy we can cut (the store "going away"); the state is written through the storage layer as an
evaluator writes it. The page polls every second (``?refresh=1``) so the tests stay short.
Assertions are about what a risk officer sees: text, colours, rows, banners.

Set ``RISK_MONITOR_DASHBOARD_SCREENSHOT=<path.png>`` to keep the screenshot of the full page
(docs/img/dashboard.png is made that way).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.engine import make_url

from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.limits import LimitConfig
from risk_monitor_tests.fixtures.dashboard import (
    DASHBOARD_LIMITS,
    HOSTILE_ID,
    HOSTILE_SCOPE,
    dashboard_config,
    write_desk_state,
)
from risk_monitor_tests.fixtures.service import ServiceThread, TcpProxy, service_settings
from risk_monitor_tests.fixtures.storage import empty_tables
from risk_monitor_tests.fixtures.waiting import scaled

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GREEN = "rgba(46, 125, 50, 1)"  # --ok
RED = "rgba(198, 40, 40, 1)"  # --breach
GREY = "rgba(95, 99, 120, 1)"  # --unknown
WAIT_S = scaled(20.0)  # a hang guard: stretched under CI's contention run


@dataclass
class Stack:
    storage: Storage
    proxy: TcpProxy
    service: ServiceThread

    @property
    def page(self) -> str:
        return f"{self.service.rest_url}/?refresh=1"


@pytest.fixture(scope="module")
def stack(module_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    storage = Storage.open(module_postgres_url)  # the evaluator's side: migrates, writes
    url = make_url(module_postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    service_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    # no outbox dispatcher: the page must show the delivery states the tests write (a dispatcher
    # would deliver the pending alert while the test reads the table, re-rendering it)
    settings = service_settings(database_url=service_url, redis_url=None,
                                tmp=tmp_path_factory.mktemp("dashboard"),
                                service={"dispatch_alerts": False})
    service = ServiceThread(settings).start()
    try:
        yield Stack(storage, proxy, service)
    finally:
        service.stop()
        proxy.stop()
        storage.close()


@pytest.fixture
def clean(stack: Stack) -> Stack:
    empty_tables(stack.storage.engine)
    return stack


# -- helpers ------------------------------------------------------------------------------------------
def wait(driver: WebDriver, predicate: Callable[[WebDriver], Any], what: str,
         timeout: float = WAIT_S) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)
                             ).until(predicate)
    except TimeoutException:
        status = driver.find_element(By.ID, "overall-status").text
        banner = driver.find_element(By.ID, "stale-banner").text
        pytest.fail(f"timed out after {timeout}s waiting for {what} "
                    f"(status {status!r}, banner {banner!r})")


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def status_is(expected: str) -> Callable[[WebDriver], bool]:
    return lambda d: d.find_element(By.ID, "overall-status").get_attribute("data-status") \
        == expected


def open_page(driver: WebDriver, stack: Stack) -> None:
    driver.get(stack.page)
    wait(driver, lambda d: int(d.find_element(By.TAG_NAME, "body")
                               .get_attribute("data-refresh-count") or 0) >= 1, "first refresh")


def attribute(element: Any, name: str) -> str:
    return str(element.get_attribute(name) or "")


def colour(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).value_of_css_property("background-color"))


def limit_rows(driver: WebDriver) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#limits-table tbody tr"))


def cell(row: Any, name: str) -> str:
    return str(row.find_element(By.CSS_SELECTOR, f"td.c-{name}").text)


def compliant_config() -> LimitConfig:
    """The desk's limits with room for the BTC position (610k against 1M): all OK."""
    limits = [dict(limit) for limit in DASHBOARD_LIMITS["limits"]]
    limits[0].update(warn=800_000, breach=1_000_000)
    return dashboard_config(limits=limits)


def write_compliant(stack: Stack, at: datetime) -> None:
    write_desk_state(stack.storage, at, failed=(), hostile=False, history=False, alerts=False,
                     config=compliant_config())


def severe_console_entries(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def full_page_screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page, beyond the viewport (Chrome DevTools Protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    })
    path.write_bytes(base64.b64decode(shot["data"]))


# -- tests --------------------------------------------------------------------------------------------
def test_no_evaluation_reads_unknown_not_green(browser: WebDriver, clean: Stack) -> None:
    open_page(browser, clean)
    wait(browser, status_is("UNKNOWN"), "UNKNOWN status")
    assert text(browser, "overall-status") == "UNKNOWN"
    assert colour(browser, "overall-status") == GREY
    source = browser.find_element(By.ID, "evaluation-source")
    assert source.text == "NO EVALUATION YET" and "no-eval" in attribute(source, "class")
    banner = browser.find_element(By.ID, "stale-banner")
    assert banner.is_displayed() and "no risk evaluation yet" in banner.text
    assert browser.find_element(By.ID, "limits-empty").is_displayed()
    assert limit_rows(browser) == []


def test_breach_unknown_alerts_exposures_and_timeline(browser: WebDriver, clean: Stack,
                                                      tmp_path: Path) -> None:
    written = write_desk_state(clean.storage, datetime.now(UTC))
    browser.get_log("browser")  # drop entries of earlier pages
    open_page(browser, clean)
    wait(browser, status_is("BREACH"), "BREACH status")
    wait(browser, lambda d: len(limit_rows(d)) == len(written.results), "every limit row")

    # header: red BREACH, what it is based on
    assert text(browser, "overall-status") == "BREACH"
    assert "status-breach" in attribute(browser.find_element(By.ID, "overall-status"), "class")
    assert colour(browser, "overall-status") == RED
    assert text(browser, "config-version") == written.report.config_version
    assert clean.service.app is not None  # the service applies its own limits file
    in_force = clean.service.app.config_status()["limits_version"]
    assert in_force != written.report.config_version
    assert text(browser, "config-in-force") == f"limits in force now: {in_force}"
    assert text(browser, "evaluation-source") == "database"
    assert re.fullmatch(r"\d+ s", text(browser, "data-age"))

    # limits: worst first; the BREACH row with its utilisation; the UNKNOWN row with its reason
    rows = limit_rows(browser)
    first = rows[0]
    assert first.get_attribute("data-limit-id") == "btc-binance-notional"
    assert first.get_attribute("data-status") == "BREACH"
    assert cell(first, "status") == "BREACH"
    assert cell(first, "value") == "$610,000" and cell(first, "breach") == "$500,000"
    assert cell(first, "util") == "122.0 %"
    fill = first.find_element(By.CSS_SELECTOR, ".fill")
    assert "fill-breach" in attribute(fill, "class")
    assert fill.value_of_css_property("background-color") == RED
    unknown = next(r for r in rows if r.get_attribute("data-scope") == "venue:okx")
    assert cell(unknown, "status") == "UNKNOWN" and cell(unknown, "util") == "unknown"
    assert "okx" in cell(unknown, "reason") and "RM201" in cell(unknown, "reason")
    assert cell(unknown, "value") == "—"

    # configuration text is shown as text, never run as markup
    hostile = next(r for r in rows if cell(r, "limit") == HOSTILE_ID)
    assert cell(hostile, "scope") == HOSTILE_SCOPE
    assert cell(hostile, "reason") == "<b>bold?</b> & friends"
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "#limits-table tbody img, "
                                                  "#limits-table tbody script, "
                                                  "#limits-table tbody b") == []

    # a missing source is not "no risk": banner, and the source is marked missing
    banner = browser.find_element(By.ID, "stale-banner")
    assert banner.is_displayed() and "exchange:okx:main is missing (RM201)" in banner.text
    okx = browser.find_element(By.CSS_SELECTOR, "#sources-table tr[data-source='exchange:okx:main']")
    assert "MISSING RM201" in okx.text
    binance = browser.find_element(By.CSS_SELECTOR,
                                   "#sources-table tr[data-source='exchange:binance:main']")
    assert binance.find_element(By.CSS_SELECTOR, ".c-state").text == "OK"

    # exposures: SVG bars for known venues, "unknown" for the blind one; equity unknown
    chart = browser.find_element(By.ID, "venue-chart")
    binance_bars = chart.find_elements(By.CSS_SELECTOR, "g[data-key='binance'] rect")
    assert len(binance_bars) == 2 and float(attribute(binance_bars[0], "width")) > 0
    assert "G $755.0k" in chart.find_element(By.CSS_SELECTOR, "g[data-key='binance']").text
    assert chart.find_element(By.CSS_SELECTOR, "g[data-key='okx']").text.endswith("unknown")
    assert text(browser, "equity") == "unknown"
    assert {g.get_attribute("data-key") for g in browser.find_elements(
        By.CSS_SELECTOR, "#asset-chart g[data-key]")} == {"BTC", "ETH"}

    # alerts: three delivered with their latency, the newest still pending
    alerts = browser.find_elements(By.CSS_SELECTOR, "#alerts-table tbody tr")
    assert [a.get_attribute("data-delivery") for a in alerts] == ["pending", "sent", "sent",
                                                                  "sent"]
    assert HOSTILE_ID in alerts[0].text
    for row in alerts[1:]:
        assert "delivered" in row.text
        latencies = row.find_elements(By.CSS_SELECTOR, "td.num")
        assert all(re.fullmatch(r"[\d.]+ s|\d+ min", td.text) for td in latencies)
    assert "1 awaiting delivery" in text(browser, "alerts-summary")

    # the 24 h compliance timeline of the BTC limit: OK, then WARN, then BREACH now
    strip = wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, "#timeline .tl-row[data-limit-id='btc-binance-notional'] rect.seg"),
        "timeline strip")
    assert [s.get_attribute("data-status") for s in strip] == ["OK", "WARN", "BREACH"]

    assert severe_console_entries(browser) == []  # no script error, no CSP violation

    shot = Path(os.environ.get("RISK_MONITOR_DASHBOARD_SCREENSHOT") or tmp_path / "dash.png")
    full_page_screenshot(browser, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # sorting by utilisation, both ways; unknown values stay at the bottom
    def utilisations() -> list[str]:
        return [cell(r, "util") for r in limit_rows(browser)]

    button = browser.find_element(By.CSS_SELECTOR, "button[data-sort='utilisation']")
    button.click()
    header = button.find_element(By.XPATH, "..")
    assert header.get_attribute("aria-sort") == "descending"
    known = [float(u.split()[0]) for u in utilisations() if u != "unknown"]
    assert known == sorted(known, reverse=True) and known[0] == 122.0
    assert utilisations()[-2:] == ["unknown", "unknown"]
    button.click()
    assert header.get_attribute("aria-sort") == "ascending"
    known = [float(u.split()[0]) for u in utilisations() if u != "unknown"]
    assert known == sorted(known) and utilisations()[-1] == "unknown"


def test_old_data_shows_the_stale_banner_and_never_green(browser: WebDriver,
                                                         clean: Stack) -> None:
    write_compliant(clean, datetime.now(UTC) - timedelta(minutes=10))
    open_page(browser, clean)
    wait(browser, lambda d: "last evaluation is" in text(d, "stale-banner"), "stale banner")
    assert text(browser, "overall-status") == "UNKNOWN"
    assert colour(browser, "overall-status") == GREY
    assert "last evaluation said COMPLIANT" in text(browser, "status-note")
    assert "10 min old (freshness budget 60 s)" in text(browser, "stale-banner")
    assert text(browser, "data-age") == "10 min"
    assert all(cell(r, "status") == "OK" for r in limit_rows(browser))  # what it said then


def test_auto_refresh_shows_a_new_evaluation_without_reload(browser: WebDriver,
                                                            clean: Stack) -> None:
    write_compliant(clean, datetime.now(UTC) - timedelta(minutes=10))
    open_page(browser, clean)
    wait(browser, status_is("UNKNOWN"), "stale page")
    old_as_of = text(browser, "as-of")
    browser.execute_script("window.__sameDocument = 'yes'")

    write_compliant(clean, datetime.now(UTC))
    wait(browser, status_is("COMPLIANT"), "the new evaluation")
    assert colour(browser, "overall-status") == GREEN
    assert not browser.find_element(By.ID, "stale-banner").is_displayed()
    assert text(browser, "as-of") != old_as_of
    assert browser.execute_script("return window.__sameDocument") == "yes"  # no reload
    assert text(browser, "equity") == "$2,481,000"


def test_unreadable_store_turns_the_page_unknown(browser: WebDriver, clean: Stack) -> None:
    write_compliant(clean, datetime.now(UTC))
    open_page(browser, clean)
    wait(browser, status_is("COMPLIANT"), "a compliant page")
    clean.proxy.cut()
    try:
        wait(browser, lambda d: text(d, "evaluation-source") == "STORE UNAVAILABLE",
             "the store outage")
        assert text(browser, "overall-status") == "UNKNOWN"
        assert colour(browser, "overall-status") == GREY
        assert re.search(r"cannot read risk state from the risk store \(RM\d{3}\)",
                         text(browser, "stale-banner"))
    finally:
        clean.proxy.restore()
    wait(browser, status_is("COMPLIANT"), "recovery after the store is back")
    assert not browser.find_element(By.ID, "stale-banner").is_displayed()


def test_lost_service_never_stays_green(browser: WebDriver, clean: Stack) -> None:
    """Last in the module: it stops the service."""
    write_compliant(clean, datetime.now(UTC))
    open_page(browser, clean)
    wait(browser, status_is("COMPLIANT"), "a compliant page")
    clean.service.stop()
    wait(browser, status_is("UNKNOWN"), "the page noticing the service is gone")
    assert colour(browser, "overall-status") == GREY
    banner = text(browser, "stale-banner")
    assert "cannot reach the Risk Monitor service" in banner
    assert "figures below are from" in banner
