"""Registration hash encoding, and key scheme (no server)."""

from __future__ import annotations

from risk_monitor.adapters.redis_registry import (
    ServiceInstance,
    instance_key,
    service_pattern,
)


def test_hash_round_trip() -> None:
    instance = ServiceInstance(
        service="risk-monitor", instance_id="host-1", grpc_address="127.0.0.1:5001",
        rest_url="http://127.0.0.1:8001", version="1.2.3", venues=("binance", "okx"),
        started_at="2025-10-01T00:00:00+00:00", heartbeat_at="2025-10-01T00:00:05+00:00",
        ttl_s=15.0, metadata={"environment": "ci", "pid": 42})
    raw = {k.encode(): v.encode() for k, v in instance.to_hash().items()}
    assert all(isinstance(v, str) for v in instance.to_hash().values())
    assert ServiceInstance.from_hash(raw) == instance


def test_foreign_fields_and_garbage_are_tolerated() -> None:
    decoded = ServiceInstance.from_hash({
        "service": "config-service", "instance_id": "x", "rest_url": "http://h:1",
        "venues": "not json", "ttl_s": "soon", "zone": "eu-1"})
    assert decoded.venues == () and decoded.ttl_s == 0.0
    assert decoded.metadata == {"zone": "eu-1"}
    assert decoded.grpc_address == ""


def test_key_scheme_and_glob_escaping() -> None:
    assert instance_key("svc", "risk-monitor", "a") == "svc:risk-monitor:a"
    assert service_pattern("svc", "risk-monitor") == "svc:risk-monitor:*"
    assert service_pattern("t[1]", "a*b?") == "t\\[1\\]:a\\*b\\?:*"

