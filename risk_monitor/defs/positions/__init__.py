"""Dagster definitions for the positions domain."""
