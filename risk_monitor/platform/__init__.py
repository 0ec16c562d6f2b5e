"""Settings, logging, errors, metrics and resilience shared by every layer."""
