"""Venue simulators (Binance USDⓈ-M futures, OKX swaps) over one shared market model."""

from risk_sim.exchange.base import VenueError, VenueSimulator, WsConnection
from risk_sim.exchange.binance import BinanceSimulator
from risk_sim.exchange.okx import OkxSimulator

SIMULATORS: dict[str, type[VenueSimulator]] = {"binance": BinanceSimulator, "okx": OkxSimulator}

__all__ = ["SIMULATORS", "BinanceSimulator", "OkxSimulator", "VenueError", "VenueSimulator",
           "WsConnection"]
