"""Dagster definitions for the alerts domain."""
