"""A simulated trading desk and the trading scenarios it plays against Risk Monitor."""
