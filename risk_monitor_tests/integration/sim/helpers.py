"""Small helpers shared by the simulator tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.launcher import SimulatorStack
from risk_sim.market import PositionView


async def call(exchange: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a ccxt method on a sync or async client alike."""
    result = getattr(exchange, method)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def close(exchange: Any) -> None:
    closer = getattr(exchange, "close", None)
    if closer is not None:
        result = closer()
        if inspect.isawaitable(result):
            await result


def f(value: Decimal) -> float:
    return float(value)


def assert_position_matches(unified: dict[str, Any], truth: PositionView) -> None:
    """A ccxt unified position equals the simulator's view of it."""
    assert unified["symbol"] == truth.symbol
    assert unified["side"] == truth.side
    assert unified["contracts"] == f(truth.contracts)
    assert unified["contractSize"] == f(truth.instrument.contract_size)
    assert unified["entryPrice"] == f(truth.position.entry_price)
    assert unified["markPrice"] == f(truth.mark)
    assert unified["notional"] == f(truth.notional)
    assert unified["unrealizedPnl"] == f(truth.unrealized_pnl)
    assert unified["liquidationPrice"] == f(truth.liquidation_price)
    assert unified["marginMode"] == truth.margin_mode


def clear_positions(stack: SimulatorStack, venue: str, account: str = "main") -> None:
    for view in stack.market.positions(venue, account):
        stack.market.set_position(venue, account, view.symbol, side=view.side, contracts=0)
    assert stack.market.positions(venue, account) == []


async def eventually(check: Callable[[], Any], timeout: float = 10.0,
                     interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns a truthy value or ``timeout`` passes (then raise)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
