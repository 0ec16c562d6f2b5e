"""Dagster definitions for the compliance domain."""
