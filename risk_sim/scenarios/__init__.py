"""Scenario files shipped with risk_sim (``<name>.yaml``); see docs/simulators.md."""
