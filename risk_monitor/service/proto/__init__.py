"""Generated gRPC stubs of risk_monitor.proto (regenerate with ``generate.py``)."""
