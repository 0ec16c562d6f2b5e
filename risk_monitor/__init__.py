"""Risk Monitor: near-real-time risk monitoring for crypto trading desks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("risk-monitor")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
