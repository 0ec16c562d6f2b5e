"""Quote admission, the one rule every quote reader uses: fresh, stale, missing, outlier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from risk_monitor.domain.quotes import QuotePolicy, quotes_from_rows
from risk_monitor.platform.errors import DataValidationError, MissingDataError, StaleDataError
from risk_monitor_tests.unit.domain.builders import quote

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
POLICY = QuotePolicy(max_age_s=30.0, max_future_skew_s=5.0, max_deviation=0.25)


def test_stale_and_missing_instruments_are_named_per_venue() -> None:
    now = datetime.now(UTC)
    rows = [quote("binance", BTC, 60_000, at=now - timedelta(seconds=1)),
            quote("binance", ETH, 3_000, at=now - timedelta(seconds=1)),
            quote("okx", BTC, 60_010, at=now - timedelta(seconds=120)),  # stale
            quote("bybit", BTC, 1.0, at=now)]  # not configured: ignored
    symbols = {"binance": (BTC, ETH), "okx": (BTC, ETH), "deribit": (BTC,)}
    collected = quotes_from_rows(rows, symbols, now, POLICY, {"binance": "ws://sim"})
    assert sorted(zip(collected.frame["venue"], collected.frame["instrument"], strict=True)) \
        == [("binance", BTC), ("binance", ETH)]
    status = {s.venue: s for s in collected.sources}
    assert status["binance"].ok and status["binance"].rows == 2
    assert status["binance"].endpoint_override == "ws://sim"
    assert not status["okx"].ok and status["okx"].error_code == StaleDataError.code
    assert BTC in (status["okx"].error or "") and ETH in (status["okx"].error or "")
    assert not status["deribit"].ok and status["deribit"].error_code == MissingDataError.code
    assert all(s.account == "*" and s.as_of == now for s in collected.sources)


def test_an_absurd_quote_is_refused_and_its_venue_fails_closed() -> None:
    now = datetime.now(UTC)
    rows = [quote(v, BTC, 60_000 + i, at=now) for i, v in enumerate(("binance", "okx", "bybit"))]
    rows.append(quote("deribit", BTC, 60_000_000, at=now))  # a thousand times the others
    symbols = {v: (BTC,) for v in ("binance", "okx", "bybit", "deribit")}
    collected = quotes_from_rows(rows, symbols, now, POLICY)
    assert set(collected.frame["venue"]) == {"binance", "okx", "bybit"}
    status = {s.venue: s for s in collected.sources}
    assert (status["deribit"].ok, status["deribit"].error_code) == (False,
                                                                    DataValidationError.code)
    assert "absurd" in (status["deribit"].error or "")
    assert set(collected.rejected) == {f"deribit:{BTC}"}
    assert all(status[v].ok for v in ("binance", "okx", "bybit"))


def test_the_deviation_threshold_comes_from_the_policy() -> None:
    now = datetime.now(UTC)
    rows = [quote("binance", BTC, 100.0, at=now), quote("okx", BTC, 140.0, at=now)]
    symbols = {"binance": (BTC,), "okx": (BTC,)}
    strict = quotes_from_rows(rows, symbols, now, POLICY)
    assert strict.frame.empty and set(strict.rejected) == {f"binance:{BTC}", f"okx:{BTC}"}
    loose = quotes_from_rows(rows, symbols, now,
                             QuotePolicy(max_age_s=30.0, max_future_skew_s=5.0, max_deviation=0.5))
    assert len(loose.frame) == 2 and not loose.rejected and all(s.ok for s in loose.sources)


def test_a_document_that_is_not_trusted_makes_every_limit_unknown() -> None:
    from risk_monitor.domain.engine import evaluate
    from risk_monitor.domain.model import LimitStatus
    from risk_monitor_tests.unit.domain.builders import config, desk

    trusted = config({"id": "gross", "kind": "gross_exposure", "scope": {"venue": "*"},
                      "warn": 1.0, "breach": 2.0},
                     {"id": "age", "kind": "data_age", "scope": {"venue": "*"},
                      "warn": 30, "breach": 50})
    known = evaluate(desk(), trusted).results
    assert {r.status for r in known} - {LimitStatus.UNKNOWN}  # the desk is evaluable
    blind = evaluate(desk(), trusted.fail_closed("no limit document")).results
    assert [(r.limit_id, r.scope) for r in blind] == [(r.limit_id, r.scope) for r in known]
    assert all(r.status is LimitStatus.UNKNOWN and "no limit document" in r.reason
               for r in blind)
    assert trusted.fail_closed("x").version == trusted.version
