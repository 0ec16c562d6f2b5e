"""The trading e2e's comparison of the monitor's figures with the venues' (risk_sim.trading.truth)."""

from __future__ import annotations

from risk_sim.trading.truth import Figures, Tolerance, compare, differences, monitor_figures

BTC = "BTC/USDT:USDT"


def test_monitor_document_becomes_signed_figures_per_venue_and_instrument() -> None:
    document = {
        "positions": [{"venue": "okx", "account": "main", "instrument": BTC, "side": "short",
                       "quantity": 2.0, "entry_price": 60_000.0, "mark_price": 60_100.0,
                       "unrealized_pnl": -200.0},
                      {"venue": "other", "account": "main", "instrument": BTC, "side": "long",
                       "quantity": 9.0}],
        "realised": [{"venue": "okx", "account": "main", "instrument": BTC, "gross": 5.0,
                      "fees": 1.5}],
    }
    assert monitor_figures(document, ["okx"]) == {
        ("okx", BTC): Figures(-2.0, 60_000.0, 60_100.0, -200.0, 5.0, 1.5)}


def test_a_moved_mark_is_no_divergence_but_a_fee_sign_is() -> None:
    truth = Figures(quantity=3.0, entry=60_000.0, mark=60_030.0, unrealised=90.0, realised=-6.6,
                    fees=18.0)
    # the monitor read the position when the mark was 60 010: its upl is right for that mark
    monitor = Figures(quantity=3.0, entry=60_000.0, mark=60_010.0, unrealised=30.0,
                      realised=-6.6, fees=18.0)
    assert differences(truth, monitor, Tolerance()) == ()
    flipped = Figures(**{**monitor.__dict__, "fees": -18.0})
    [(field, what)] = differences(truth, flipped, Tolerance())
    assert field == "fees" and "venue 18.0000 monitor -18.0000" in what


def test_a_position_the_monitor_does_not_show_diverges() -> None:
    result = compare({("binance", BTC): Figures(1.0, 60_000.0, 60_000.0, 0.0)}, {},
                     Tolerance(), "step")
    assert not result.ok
    assert result.fields() == {("binance", BTC, "quantity"), ("binance", BTC, "entry")}
    assert "DIVERGE" in result.line() and "quantity venue 1 monitor 0" in result.line()
