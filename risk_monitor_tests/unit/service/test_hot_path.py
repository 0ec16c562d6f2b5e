"""The hot path's own logic without servers: quote coverage, Redis stream entries, cached
reference figures, and per-tick decisions (fake accounts, SQLite store, the real domain engine)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from risk_monitor.adapters.redis_quotes import stream_entry_row
from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.limits import load_limit_config
from risk_monitor.domain.lineage import _compute_venue_versions
from risk_monitor.domain.model import BALANCE_COLUMNS, POSITION_COLUMNS
from risk_monitor.domain.quotes import QuotePolicy, quotes_from_rows
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.settings import MarketDataSettings, Settings, load_settings
from risk_monitor.service.evaluator import CachedEquity
from risk_monitor.service.hot_path import HotPath
from risk_monitor.service.quote_intake import QuoteBook
from risk_monitor.service.state import LiveEvaluation
from risk_monitor_tests.fixtures.waiting import async_wait_until
from risk_monitor_tests.unit.domain.builders import NOW, balance, frame, position, quote

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
MARKET = MarketDataSettings(max_age_s=30.0, max_future_skew_s=5.0)


def test_quote_book_keeps_the_latest_quote_and_lists_what_never_came() -> None:
    book = QuoteBook({"binance": (BTC, ETH), "okx": ()})
    assert book.missing() == [f"binance:{BTC}", f"binance:{ETH}", "okx:*"]
    book.update("binance", [quote("binance", BTC, 1.0)])
    book.update("binance", [quote("binance", BTC, 2.0)])
    book.update("okx", [quote("okx", ETH, 3.0)])
    assert book.missing() == [f"binance:{ETH}"]
    assert sorted(r["last"] for r in book.rows()) == [2.0, 3.0]


def test_quote_book_hashes_at_the_snapshot_what_the_frame_hashes() -> None:
    """Ticks are stored unhashed; each snapshot hashes what arrived since the last one, and its
    versions are the admitted frame's (what the Dagster assets record)."""
    book = QuoteBook({"binance": (BTC, ETH), "okx": (BTC,)})
    policy = QuotePolicy(max_age_s=60.0, max_future_skew_s=5.0, max_deviation=0.5)
    for step, prices in enumerate(([100.0, 10.0, 101.0], [100.5, 10.0, 100.7], [99.0, 9.9, 99.2])):
        book.update("binance", [quote("binance", BTC, prices[0]), quote("binance", ETH, 9.0)])
        book.update("binance", [quote("binance", ETH, prices[1])])  # the latest counts
        book.update("okx", [quote("okx", BTC, prices[2])])
        sequence, rows, hashed = book.snapshot()
        assert sequence == 4 * (step + 1) and len(rows) == 3
        frame = quotes_from_rows(rows, book.symbols, NOW, policy)
        assert hashed.versions(frame) == _compute_venue_versions(frame)
        assert book.snapshot()[2].versions(frame) == _compute_venue_versions(frame)


def test_stream_entry_row_reads_what_the_quote_cache_writes() -> None:
    fields = {b"instrument": b"BTC/USDT:USDT", b"base": b"BTC", b"quote": b"USDT", b"bid": b"",
              b"ask": b"60001.0", b"last": b"60000.5", b"mark": b"60000.6",
              b"ts": b"1760000000123", b"recv": b"1760000000200", b"via": b"stream"}
    row = stream_entry_row("binance", fields)
    assert row["bid"] is None and row["ask"] == 60_001.0 and row["last"] == 60_000.5
    assert row["timestamp"] == pd.Timestamp(1_760_000_000_123, unit="ms", tz="UTC")
    assert row["received_at"] == pd.Timestamp(1_760_000_000_200, unit="ms", tz="UTC")
    with pytest.raises(DataValidationError, match="'ts'"):
        stream_entry_row("binance", {**fields, b"ts": b""})
    with pytest.raises(DataValidationError, match="'last'"):
        stream_entry_row("binance", {**fields, b"last": b"false"})


class _Equity:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def start_of_day(self, scope: str, day: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database down")
        return ("sod", self.calls)

    def peak(self, scope: str) -> Any:
        return self.start_of_day(scope, None)


def test_cached_equity_reuses_figures_and_survives_a_database_outage() -> None:
    inner = _Equity()
    clock = [100.0]
    cached = CachedEquity(inner, ttl_s=1.0, monotonic=lambda: clock[0])  # type: ignore[arg-type]
    day = datetime.now(UTC).date()
    first = cached.start_of_day("portfolio", day)
    clock[0] += 0.5  # within the TTL: reused
    assert cached.start_of_day("portfolio", day) == first and inner.calls == 1
    clock[0] += 0.6  # past the TTL: refreshed, and the refresh fails
    inner.fail = True
    assert cached.start_of_day("portfolio", day) == first  # last known figure
    assert inner.calls == 2  # the refresh was tried
    with pytest.raises(ConnectionError):
        cached.peak("portfolio")  # never read: nothing to fall back on


class _Account:
    """An exchange account whose figures are always fresh (what the poll would fetch)."""

    venue, account, endpoint_override = "binance", "main", None

    def __init__(self, btc: float) -> None:
        self.btc = btc
        self.polls = 0

    def fetch_positions(self) -> pd.DataFrame:
        self.polls += 1
        now = datetime.now(UTC)
        return frame([position("binance", BTC, self.btc, 60_000, 60_000, received=now)],
                     POSITION_COLUMNS)

    def fetch_balances(self) -> pd.DataFrame:
        return frame([balance("binance", "USDT", 2_000_000, received=datetime.now(UTC))],
                     BALANCE_COLUMNS)


def _btc_desk(tmp_path: Path, **service: float) -> tuple[Settings, Storage, LiveEvaluation]:
    """Settings, a SQLite store and a live evaluation with one limit: binance BTC notional
    (WARN 800k, BREACH 1M); ``service``: the timing settings a test needs."""
    settings = load_settings(
        None, data_dir=tmp_path, venues=[{"id": "binance", "exchange": "binanceusdm",
                                          "symbols": [BTC]}],
        market_data={"exchange_max_age_s": 120.0}, service=service)
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    live = LiveEvaluation(max_age_s=60.0)
    live.set_limit_config(load_limit_config({"venues": ["binance"], "limits": [
        {"id": "btc", "kind": "max_notional", "scope": {"venue": "binance", "instrument": BTC},
         "warn": 800_000.0, "breach": 1_000_000.0}]}))
    return settings, storage, live


async def test_every_tick_is_decided_without_a_full_evaluation_and_a_crossing_alerts(
        tmp_path: Path) -> None:
    # the warm-up ends as soon as the first poll landed; its bound only has to outlast a slow
    # first poll on a busy machine (at 5 s the first evaluation ran without positions)
    settings, storage, live = _btc_desk(tmp_path, positions_poll_s=60.0,
                                        evaluate_min_interval_s=0.2, hot_path_warmup_s=60.0,
                                        persist_interval_s=60.0)
    woken: list[float] = []
    account = _Account(btc=10.0)
    hot = HotPath(settings, live, storage, instance_id="unit", wake=lambda: woken.append(1),
                  accounts=[account], custodians=[])
    await hot.start()
    try:
        hot.on_quotes("binance", [quote("binance", BTC, 60_000, at=datetime.now(UTC))])
        await async_wait_until(
            lambda: hot.evaluations >= 1 and hot.evaluator.report is not None,
            timeout=30, message="the first evaluation")
        assert account.polls == 1  # positions come from the poll, quotes from the ticks
        before = hot.evaluations
        decided = hot.evaluator.decided
        for i in range(300):  # each tick a new price, each decided on arrival
            hot.on_quotes("binance", [quote("binance", BTC, 60_000 + i, at=datetime.now(UTC))])
            (result,) = live.limit_results()
            assert result.value == 10 * (60_000 + i)  # this tick's figure, at once
        assert hot.evaluator.decided == decided + 300
        assert hot.evaluations - before <= 2  # the heartbeat only (60 s): no full evaluations
        # per tick

        hot.on_quotes("binance", [quote("binance", BTC, 110_000, at=datetime.now(UTC))])
        await async_wait_until(lambda: storage.outbox.counts()["pending"] == 1, timeout=30,
                               message="an alert enqueued")
        (row,) = storage.outbox.rows()
        assert (row.kind, row.alert_status) == ("firing", "BREACH")
        (_, note), = storage.outbox.recent()
        assert note.context["source"] == "service" and note.context["trigger"] == "tick"
        assert note.context["instance_id"] == "unit"
        assert woken  # the dispatcher is told at once, not at its next poll
        ok, detail, data = hot.readiness()
        assert ok and data["evaluations"] == hot.evaluations, detail
    finally:
        await hot.stop()
        storage.close()


async def test_a_poll_failing_as_a_whole_makes_its_sources_unknown_at_once(
        tmp_path: Path) -> None:
    """Two accounts reporting the same position key break the combined dataset: the poll fails
    as a whole, and its sources read as failed (UNKNOWN), not as the last figures."""
    settings = load_settings(
        None, data_dir=tmp_path, venues=[{"id": "binance", "exchange": "binanceusdm",
                                          "symbols": [BTC]}],
        market_data={"exchange_max_age_s": 120.0},
        service={"positions_poll_s": 60.0, "hot_path_warmup_s": 5.0})
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    live = LiveEvaluation(max_age_s=60.0)
    live.set_limit_config(load_limit_config({"venues": ["binance"], "limits": [
        {"id": "btc", "kind": "max_notional", "scope": {"venue": "binance", "instrument": BTC},
         "warn": 800_000.0, "breach": 1_000_000.0}]}))
    hot = HotPath(settings, live, storage, instance_id="unit",
                  accounts=[_Account(btc=1.0), _Account(btc=2.0)], custodians=[])
    await hot.start()
    try:
        hot.on_quotes("binance", [quote("binance", BTC, 60_000, at=datetime.now(UTC))])
        await async_wait_until(lambda: hot.evaluations >= 1, timeout=30, message="an evaluation")
        assert hot.positions is not None
        assert [(s.ok, s.error_code) for s in hot.positions.sources] == [(False, "RM300")] * 2
        (result,) = live.limit_results()
        assert result.status.value == "UNKNOWN" and "binance" in result.reason
    finally:
        await hot.stop()
        storage.close()


class _Binance:
    """The two things the tick hook reads from a ccxt.pro exchange, and its message handler."""

    id = "binanceusdm"
    markets_by_id = {"BTCUSDT": [{"symbol": BTC}], "ETHUSDT": [{"symbol": ETH}]}
    tickers: dict[str, Any] = {}

    def __init__(self) -> None:
        self.handled: list[object] = []

    def handle_message(self, client: Any, message: object) -> None:
        self.handled.append(message)


def test_the_tick_hook_reads_binance_ticker_events_itself_and_leaves_the_rest_to_ccxt() -> None:
    from risk_monitor.service.tick_hook import TickHook, ticker_row

    delivered: list[Any] = []
    exchange = _Binance()
    hook = TickHook([BTC], delivered.extend)
    hook.install(exchange)
    event = {"e": "24hrMiniTicker", "E": 1_760_000_000_123, "s": "BTCUSDT", "c": "60000.5"}
    exchange.handle_message(None, event)
    exchange.handle_message(None, {**event, "s": "ETHUSDT"})  # not wanted: dropped
    exchange.handle_message(None, {"result": None, "id": 1})  # an ack: ccxt's
    assert exchange.handled == [{"result": None, "id": 1}]
    assert hook.direct == 2 and hook.messages == 1 and hook.last_delivery is not None
    [(symbol, ticker)] = delivered
    row = ticker_row("binance", symbol, ticker, None, datetime.now(UTC))
    assert row is not None and row["instrument"] == BTC and row["last"] == 60_000.5
    assert row["mark"] == 60_000.5 and row["bid"] is None
    assert row["timestamp"] == datetime.fromtimestamp(1_760_000_000.123, UTC)


async def test_a_position_change_is_evaluated_at_once_not_held_by_the_min_interval(
        tmp_path: Path) -> None:
    # issue 13: a fill on a private stream reaches the hot path as a position poll; it must not
    # wait for ``evaluate_min_interval_s`` (60 s here) behind the previous full evaluation
    settings, storage, live = _btc_desk(tmp_path, positions_poll_s=0.2,
                                        evaluate_min_interval_s=60.0, hot_path_warmup_s=60.0,
                                        persist_interval_s=60.0)
    account = _Account(btc=10.0)
    hot = HotPath(settings, live, storage, instance_id="unit", accounts=[account], custodians=[])
    await hot.start()
    try:
        hot.on_quotes("binance", [quote("binance", BTC, 60_000, at=datetime.now(UTC))])
        await async_wait_until(lambda: hot.evaluator.report is not None, timeout=30,
                               message="the first evaluation")
        account.btc = 20.0  # 1.2M notional: over the breach level
        await async_wait_until(lambda: storage.outbox.counts()["pending"] == 1, timeout=30,
                               message="the position change alerted (well within 60 s)")
        (_, note), = storage.outbox.recent()
        assert note.context["trigger"] == "positions"
        assert note.status.value == "BREACH"
    finally:
        await hot.stop()


def test_poll_content_leaves_out_the_times_and_nothing_else() -> None:
    from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
    from risk_monitor.service.evaluator import poll_content

    def poll(btc: float, at: datetime, ok: bool = True) -> Collected:
        status = SourceStatus(kind=SourceKind.EXCHANGE, venue="binance", account="main", ok=ok,
                              as_of=at, rows=1, error_code=None if ok else "RM300")
        return Collected(frame([position("binance", BTC, btc, 60_000, 60_000, received=at)],
                               POSITION_COLUMNS), (status,))

    first, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert poll_content(poll(1.0, first)) == poll_content(poll(1.0, later))  # re-stamped
    assert poll_content(poll(1.0, first)) != poll_content(poll(2.0, later))  # a fill
    assert poll_content(poll(1.0, first)) != poll_content(poll(1.0, later, ok=False))


async def test_a_poll_that_only_re_stamps_its_data_is_stored_without_an_evaluation(
        tmp_path: Path) -> None:
    # issue 10: a quiet private stream answers the position poll every second with the same
    # positions and a new receive time; each answer used to cost a full evaluation
    from prometheus_client import REGISTRY

    settings, storage, live = _btc_desk(tmp_path, positions_poll_s=0.05,
                                        evaluate_min_interval_s=0.0, hot_path_warmup_s=60.0,
                                        persist_interval_s=60.0)
    account = _Account(btc=10.0)
    hot = HotPath(settings, live, storage, instance_id="unit", accounts=[account], custodians=[])

    def restamps() -> float:
        return REGISTRY.get_sample_value("risk_monitor_hot_path_poll_restamps_total",
                                         {"kind": "positions"}) or 0.0

    await hot.start()
    try:
        hot.on_quotes("binance", [quote("binance", BTC, 60_000, at=datetime.now(UTC))])
        await async_wait_until(lambda: hot.evaluations >= 1, timeout=30,
                               message="the first evaluation")
        before = restamps()
        await async_wait_until(lambda: restamps() >= before + 3, timeout=30,
                               message="re-stamped polls stored without an evaluation")
        evaluations = hot.evaluations
        account.btc = 20.0  # a real change: evaluated (and alerted) at once
        await async_wait_until(lambda: hot.evaluations > evaluations, timeout=30,
                               message="the changed poll evaluated")
        await async_wait_until(lambda: storage.outbox.counts()["pending"] == 1, timeout=30,
                               message="its alert")
    finally:
        await hot.stop()
        storage.close()


def test_gc_pauses_are_counted_per_generation_without_a_lock() -> None:
    import gc

    from risk_monitor.service.main import GcPauses

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(pauses)
    assert pauses.count[2] == 1 and pauses.total_s[2] >= pauses.max_s[2] > 0
    families = {f.name: f for f in pauses.collect()}
    assert {"risk_monitor_gc_pause_seconds", "risk_monitor_gc_collections",
            "risk_monitor_gc_pause_max_seconds"} <= set(families)


def test_gc_pause_without_its_start_is_not_counted() -> None:
    """A callback registered while another thread's collection runs sees only its stop: that
    is not a pause of time-since-boot (a gauge once read 2,872 s)."""
    from risk_monitor.service.main import GcPauses

    pauses = GcPauses()
    pauses("stop", {"generation": 1})
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0})
    pauses("stop", {"generation": 0})  # a second stop: no start of its own
    assert pauses.count == [1, 0, 0] and pauses.max_s[1] == 0.0
    assert 0 < pauses.max_s[0] < 1.0


class _BookTickedDuringEvaluation(QuoteBook):
    """A quote book that takes one more tick right after the evaluation's snapshot (a tick
    arriving while the full evaluation runs)."""

    def __init__(self, late: dict[str, Any]) -> None:
        super().__init__({"binance": (BTC,)})
        self.late: dict[str, Any] | None = late

    def snapshot(self) -> Any:
        taken = super().snapshot()
        if self.late is not None:
            self.update("binance", [self.late])
            self.late = None
        return taken


def test_ticks_arriving_during_a_full_evaluation_are_caught_up_in_its_thread(
        tmp_path: Path) -> None:
    """The evaluation thread applies them to the new per-tick evaluator; the loop's rebase only
    compares statuses (a crossing in such a tick is still a change, in order)."""
    from risk_monitor.adapters.collection import collect_exchange_balances, collect_positions
    from risk_monitor.adapters.market_data import quote_policy
    from risk_monitor.domain.model import LimitStatus
    from risk_monitor.lineage import HotPathLineage
    from risk_monitor.service.evaluator import LiveEvaluator

    settings, storage, live = _btc_desk(tmp_path)
    book = _BookTickedDuringEvaluation(quote("binance", BTC, 110_000, at=datetime.now(UTC)))
    book.update("binance", [quote("binance", BTC, 60_000, at=datetime.now(UTC))])
    evaluator = LiveEvaluator(settings, live, storage, book, quote_policy(settings.market_data),
                              clock=lambda: datetime.now(UTC),
                              lineage=HotPathLineage.from_settings(settings), instance_id="unit")
    accounts = [_Account(btc=10.0)]
    clock = lambda: datetime.now(UTC)  # noqa: E731
    evaluator.positions = collect_positions(accounts, settings.market_data, clock)
    evaluator.exchange_balances = collect_exchange_balances(accounts, settings.market_data, clock)
    try:
        baseline = evaluator.full()
        assert baseline is not None and baseline.incremental is not None
        assert [r.status for r in baseline.report.results] == [LimitStatus.OK]  # 600k
        assert len(baseline.caught_up) == 1 and baseline.sequence == book.sequence
        (result,) = baseline.incremental.results()
        assert result.value == 10 * 110_000  # applied in the evaluation's thread
        changed, replayed = evaluator.rebase(baseline)
        assert [r.status for r in changed] == [LimitStatus.OK]  # first decided status
        assert [[r.status for r in d.changes] for d in replayed] == [[LimitStatus.BREACH]]
        assert evaluator.decided == 1
    finally:
        storage.close()


def test_the_tick_path_reads_its_numbers_with_the_one_rule() -> None:
    import math

    from risk_monitor.service.quote_intake import tick_of
    from risk_monitor.service.tick_hook import ticker_row

    at = datetime(2026, 1, 1, tzinfo=UTC)
    row = ticker_row("binance", "BTC/USDT:USDT", {"last": "100.5", "bid": True, "ask": "nan",
                                                  "markPrice": None, "timestamp": 1_700_000_000_000},
                     None, at)
    assert row is not None
    assert (row["last"], row["bid"], row["ask"], row["mark"]) == (100.5, None, None, 100.5)
    assert ticker_row("binance", "BTC/USDT:USDT", {"last": False, "close": "inf"}, None, at) is None
    tick = tick_of("binance", {**row, "bid": 99.5, "mark": math.nan})
    assert tick is not None and (tick.last, tick.bid, tick.mark) == (100.5, 99.5, None)
    assert tick_of("binance", {**row, "last": True}) is None
