"""Dagster definitions for the risk domain."""
