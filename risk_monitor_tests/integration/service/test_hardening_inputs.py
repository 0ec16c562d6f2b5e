"""Issue #15 findings 1-3 and the stream rate limits, on the real service: PostgreSQL, a real
grpcio client and real HTTP requests. Each test failed on the landed main.

1. ``postgresql://`` (the documented form) crashed ``serve`` at start: the readiness probe built
   its own engine without the driver rewrite.
2. ``WatchAlerts`` with a NaN heartbeat never heartbeated and busy-polled the database.
3. Request strings reached the logs unbounded (a 1 MB ``client_order_id``, a 1 MB log line).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from risk_monitor.adapters.sql.engine import create_engine
from risk_monitor.platform.logging import JsonFormatter, configure_logging
from risk_monitor.service.health import CheckResult, database_check
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor_tests.fixtures.service import ServiceThread, service_settings, wait_until

pytestmark = pytest.mark.integration

#: a line longer than this means a request value went to the log unbounded
LOG_LINE_LIMIT = 4096


def bare_postgres_url(url: str) -> str:
    """The documented ``postgresql://`` form of a ``postgresql+psycopg2://`` URL."""
    assert url.startswith("postgresql+psycopg2://")
    return "postgresql://" + url.removeprefix("postgresql+psycopg2://")


class LogLines(logging.Handler):
    """Every JSON line the service logs, as written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def service(module_postgres_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """A service started with the bare ``postgresql://`` URL (finding 1) and tight stream
    limits (two open streams per client)."""
    settings = service_settings(
        database_url=bare_postgres_url(module_postgres_url), redis_url=None,
        tmp=tmp_path_factory.mktemp("hardening"),
        service={"rate_limits": {"max_streams_per_client": 2, "stream_opens_per_minute": 600}})
    thread = ServiceThread(settings).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def stub(service: ServiceThread) -> Iterator[pb_grpc.RiskMonitorStub]:
    with grpc.insecure_channel(service.grpc_target) as channel:
        yield pb_grpc.RiskMonitorStub(channel)


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    configure_logging("INFO")
    handler = LogLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def probe(url: str) -> CheckResult:
    return await database_check(url)()


# -- finding 1 --------------------------------------------------------------------------------
def test_serve_starts_on_the_documented_postgresql_url(service: ServiceThread) -> None:
    body = httpx.get(f"{service.rest_url}/readyz", timeout=5).json()
    database = next(c for c in body["checks"] if c["name"] == "database")
    assert database["ok"], database
    assert database["detail"] == "postgresql"


@pytest.mark.parametrize("form", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_every_engine_accepts_every_documented_url_form(module_postgres_url: str,
                                                        form: str) -> None:
    url = f"{form}://" + module_postgres_url.removeprefix("postgresql+psycopg2://")
    result = asyncio.run(probe(url))
    assert result.ok, result.detail
    engine = create_engine(url, pooled=False)
    try:
        assert engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


def test_sqlite_url_works_for_the_probe_too(tmp_path: Path) -> None:
    result = asyncio.run(probe(f"sqlite:///{tmp_path / 'probe.db'}"))
    assert result.ok and result.detail == "sqlite"


# -- finding 2 --------------------------------------------------------------------------------
@pytest.mark.parametrize("interval", [math.nan, math.inf, -math.inf, -1.0])
def test_watch_alerts_rejects_a_non_finite_or_negative_heartbeat(
        stub: pb_grpc.RiskMonitorStub, interval: float) -> None:
    call = stub.WatchAlerts(pb.WatchAlertsRequest(heartbeat_interval_s=interval), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(call))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat_interval_s" in (info.value.details() or "")


def test_a_nan_wait_sleeps_the_poll_interval_instead_of_spinning(
        module_postgres_url: str) -> None:
    """The provider's own guard: NaN used to become ``sleep(0)`` (a busy poll of the DB)."""
    engine = create_engine(module_postgres_url, pooled=False)
    provider = DatabaseRiskView(engine, poll_interval_s=0.3)
    try:
        started = time.monotonic()
        asyncio.run(provider.wait_alerts(0, math.nan))
        assert time.monotonic() - started >= 0.25  # it waited: a lower bound holds under load
    finally:
        engine.dispose()


def test_watch_alerts_rejects_a_cursor_that_is_not_one(stub: pb_grpc.RiskMonitorStub) -> None:
    for cursor in ("-1", "1e9", "9" * 40, "١٢"):  # the last: Arabic-Indic digits
        call = stub.WatchAlerts(pb.WatchAlertsRequest(cursor=cursor), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            next(iter(call))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cursor


# -- finding 3 --------------------------------------------------------------------------------
def order(**fields: object) -> pb.CheckOrderRequest:
    base: dict[str, object] = {"venue": "binance", "instrument": "BTC/USDT:USDT",
                               "side": pb.SIDE_BUY, "quantity": 0.1}
    base.update(fields)
    return pb.CheckOrderRequest(**base)  # type: ignore[arg-type]


def test_a_huge_client_order_id_never_reaches_the_log(stub: pb_grpc.RiskMonitorStub,
                                                      log_lines: LogLines) -> None:
    marker = "Z" * 60_000  # under the message cap, over the field's bound
    with pytest.raises(grpc.RpcError) as info:
        stub.CheckOrder(order(client_order_id=marker), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client_order_id" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as too_big:  # 1 MB: refused by the transport
        stub.CheckOrder(order(client_order_id="Y" * 1_000_000), timeout=10)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wait_until(lambda: any("grpc_invalid_argument" in line for line in log_lines.lines),
               message="the refusal is logged")
    assert max(len(line) for line in log_lines.lines) < LOG_LINE_LIMIT
    assert not any("Z" * 100 in line or "Y" * 100 in line for line in log_lines.lines)


def test_an_accepted_client_order_id_is_logged_bounded(stub: pb_grpc.RiskMonitorStub,
                                                       log_lines: LogLines) -> None:
    reply = stub.CheckOrder(order(client_order_id="c" * 128), timeout=10)
    assert reply.decision == pb.DECISION_DENY  # no evaluation yet: fail closed
    line = wait_until(lambda: next((x for x in log_lines.lines if "order_checked" in x), None),
                      message="order_checked is logged")
    assert "c" * 64 + "...(+64 chars)" in line and "c" * 65 not in line


@pytest.mark.parametrize(("fields", "field"), [
    ({"side": pb.SIDE_UNSPECIFIED}, "side"),
    ({"side": 7}, "side"),
    ({"quantity": math.nan}, "quantity"),
    ({"quantity": math.inf}, "quantity"),
    ({"quantity": 0.0}, "quantity"),
    ({"quantity": 1e300}, "quantity"),
    ({"price": -5.0}, "price"),
    ({"price": math.nan}, "price"),
    ({"venue": ""}, "venue"),
    ({"venue": "Bin ance"}, "venue"),
    ({"venue": "b" * 65}, "venue"),
    ({"account": "x\n"}, "account"),
    ({"instrument": "BTC/USDT\x00"}, "instrument"),
    ({"instrument": "B" * 101}, "instrument"),
    ({"position_side": "sideways"}, "position_side"),
])
def test_check_order_rejects_each_bad_field(stub: pb_grpc.RiskMonitorStub,
                                            fields: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.CheckOrder(order(**fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")


def test_list_limit_status_rejects_unknown_enum_values_and_long_strings(
        stub: pb_grpc.RiskMonitorStub) -> None:
    for request in (pb.ListLimitStatusRequest(statuses=[99]),  # type: ignore[list-item]
                    pb.ListLimitStatusRequest(statuses=[pb.LIMIT_STATUS_UNSPECIFIED]),
                    pb.ListLimitStatusRequest(scope_prefix="s" * 300),
                    pb.ListLimitStatusRequest(limit_id="NOT an id")):
        with pytest.raises(grpc.RpcError) as info:
            stub.ListLimitStatus(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.ListLimitStatus(pb.ListLimitStatusRequest(statuses=[pb.LIMIT_STATUS_BREACH]),
                                timeout=10) is not None


def test_rest_rejects_a_bad_query_with_a_typed_body(service: ServiceThread) -> None:
    for hours in ("nan", "inf", "-1", "1e308", "x" * 5000):
        response = httpx.get(f"{service.rest_url}/v1/dashboard/timeline",
                             params={"hours": hours}, timeout=10)
        assert response.status_code == 400, hours
        assert "hours" in str(response.json()["error"])


def test_rest_errors_carry_the_typed_body(service: ServiceThread) -> None:
    missing = httpx.get(f"{service.rest_url}/v1/nothing-here", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = httpx.post(f"{service.rest_url}/v1/risk/status", timeout=10)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


# -- rate limits on streams -------------------------------------------------------------------
def test_a_client_holds_at_most_its_share_of_streams(service: ServiceThread,
                                                     stub: pb_grpc.RiskMonitorStub) -> None:
    request = pb.WatchAlertsRequest(heartbeat_interval_s=0.5)
    first = stub.WatchAlerts(request, timeout=30)
    second = stub.WatchAlerts(request, timeout=30)
    try:
        assert next(iter(first)).HasField("heartbeat")  # both streams are open and served
        assert next(iter(second)).HasField("heartbeat")
        third = stub.WatchAlerts(request, timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            next(iter(third))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()  # a closed stream frees its slot

        def reopened() -> bool:
            call = stub.WatchAlerts(request, timeout=30)
            try:
                return next(iter(call)).HasField("heartbeat")
            finally:
                call.cancel()

        assert wait_until(reopened, timeout=20, message="a slot frees after cancel")
    finally:
        first.cancel()
        second.cancel()
