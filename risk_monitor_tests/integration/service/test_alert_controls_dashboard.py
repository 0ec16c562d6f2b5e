"""Silences and acknowledgements on the dashboard, in a real browser (headless Chromium via
Selenium) against a real service on PostgreSQL: a risk officer opening the page sees what is
held back, by whom, until when and why, without asking the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.codec import utc_now
from risk_monitor_tests.fixtures.service import ServiceThread, service_settings
from risk_monitor_tests.fixtures.storage import evaluate, make_result

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

pytestmark = [pytest.mark.integration]

HOSTILE = '<img src=x onerror="window.__xss=1">'  # a comment is text, never markup
SCOPE = "venue:okx|instrument:BTC/USDT:USDT"


@pytest.fixture
def service(fresh_postgres_url: str, tmp_path: Path) -> Iterator[tuple[ServiceThread, Storage]]:
    storage = Storage.open(fresh_postgres_url)
    settings = service_settings(database_url=fresh_postgres_url, redis_url=None, tmp=tmp_path,
                                service={"dispatch_alerts": False})
    thread = ServiceThread(settings).start()
    try:
        yield thread, storage
    finally:
        thread.stop()
        storage.close()


def _rows(driver: Chrome, table: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_the_dashboard_lists_active_silences_and_acknowledgements(
        browser: Chrome, service: tuple[ServiceThread, Storage]) -> None:
    thread, storage = service
    (firing,) = evaluate(storage, make_result("BREACH", utc_now(), scope=SCOPE))
    storage.controls.acknowledge(firing.correlation_id, by="erin", comment="hedging now")
    silence = storage.controls.add_silence(
        ["venue=okx", "severity=~critical|warning"], ends_at=utc_now() + timedelta(hours=2),
        created_by="carol", comment=f"okx maintenance {HOSTILE}")
    ended = storage.controls.add_silence(["venue=binance"], ends_at=utc_now() + timedelta(hours=1),
                                         created_by="dave", comment="ended")
    storage.controls.expire_silence(ended.id, by="dave")

    browser.get(f"{thread.rest_url}/?refresh=1")
    WebDriverWait(browser, 20, poll_frequency=0.1).until(
        lambda d: "1 active silence(s), 1 acknowledged" in d.find_element(
            By.ID, "controls-summary").text)
    (row,) = _rows(browser, "silences-table")  # the ended silence is not shown
    assert row[0] == silence.id[:8]
    assert row[1] == 'venue="okx", severity=~"critical|warning"'
    assert row[4:] == ["carol", f"okx maintenance {HOSTILE}"]
    (ack,) = _rows(browser, "acks-table")
    assert ack[1:] == ["max_notional", SCOPE, "BREACH", "erin", "hedging now"]
    assert browser.execute_script("return window.__xss") is None
