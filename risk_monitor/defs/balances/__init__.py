"""Dagster definitions for the balances domain."""
