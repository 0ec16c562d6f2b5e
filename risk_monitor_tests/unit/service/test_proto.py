"""The committed gRPC stubs are exactly what generate.py produces from the proto."""

from __future__ import annotations

from pathlib import Path

from risk_monitor.service.proto import generate


def test_generated_stubs_are_reproducible(tmp_path: Path) -> None:
    produced = generate.generate(tmp_path)
    assert [p.name for p in produced] == generate.generated_names()
    for path in produced:
        committed = generate.PROTO_DIR / path.name
        assert committed.is_file(), f"{path.name} is not committed"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{path.name} is out of date: run python -m risk_monitor.service.proto.generate")


def test_service_and_package_names() -> None:
    from risk_monitor.service.grpc_server import RISK_SERVICE
    from risk_monitor.service.proto import risk_monitor_pb2 as pb

    assert RISK_SERVICE == "risk_monitor.v1.RiskMonitor"
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["RiskMonitor"].methods}
    assert methods == {"GetRiskStatus", "ListLimitStatus", "WatchAlerts", "CheckOrder",
                       "AcknowledgeAlert", "CreateSilence", "ExpireSilence", "ListAlertControls",
                       "GetTradingState", "SetTradingState"}
