"""Dagster definitions, one folder per domain; loaded by risk_monitor.definitions."""
