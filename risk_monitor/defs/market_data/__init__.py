"""Dagster definitions for the market_data domain."""
