"""Hypothesis fuzzing of the boundary parsers of issue #15 item 5: limit documents, the
configuration-service client's payload parsing, and gRPC request validation.

The rule: on any input a parser returns its value or raises one of the project's typed errors
(:class:`RiskMonitorError`); anything else (TypeError, ValueError, OverflowError,
RecursionError...) is an untyped escape and fails the test. Runs are derandomised so CI sees
the same cases each time; raise ``FUZZ_EXAMPLES`` locally to search longer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_monitor.adapters.config_service import (
    ConfigDocument,
    parse_response,
    validate_document,
)
from risk_monitor.domain.limit_config import KIND_SPECS, LimitKind, load_limit_config, max_level
from risk_monitor.platform.errors import DataValidationError, RiskMonitorError
from risk_monitor.service import validation
from risk_monitor.service.grpc_server import order_from_request
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.security import Authenticator

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies -------------------------------------------------------------------------------
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 1e13, 1e13 + 1, 0.0, -0.0, 5e-324, 1e16, 10_001.0]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=40,
)
#: what no JSON parser yields but a caller might still hand over
odd_values = st.one_of(st.binary(max_size=20), st.tuples(leaves, leaves),
                       st.just(datetime(2026, 1, 1, tzinfo=UTC)), st.just(object()),
                       st.frozensets(st.integers(), max_size=3))
anything = st.one_of(json_values, odd_values,
                     st.dictionaries(st.one_of(st.integers(), st.text(max_size=5)),
                                     st.one_of(json_values, odd_values), max_size=4))

kinds = st.one_of(st.sampled_from([k.value for k in LimitKind]), st.text(max_size=12), leaves)
scopes = st.one_of(
    st.fixed_dictionaries({}, optional={
        "venue": st.one_of(st.sampled_from(["binance", "*", "okx|x"]), st.text(max_size=200)),
        "account": st.one_of(st.just("main"), leaves),
        "instrument": st.one_of(st.just("BTC/USDT:USDT"), st.text(max_size=200)),
        "asset": st.one_of(st.sampled_from(["BTC", "btc", "*"]), leaves),
    }),
    anything,
)
limit_entries = st.fixed_dictionaries(
    {"id": st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True), leaves),
     "kind": kinds, "breach": st.one_of(numbers, leaves)},
    optional={"warn": st.one_of(numbers, leaves), "scope": scopes,
              "description": st.one_of(st.text(max_size=50), leaves), "extra": leaves},
)
limit_documents = st.one_of(
    st.fixed_dictionaries({"limits": st.lists(limit_entries, max_size=4)},
                          optional={"venues": st.one_of(st.lists(st.text(max_size=10),
                                                                 max_size=3), anything),
                                    "schema_version": st.one_of(st.just(1), leaves),
                                    "valuation": anything, "description": leaves}),
    anything,
)


def typed_only(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a typed error is an answer, anything else escapes and fails the test."""
    try:
        return fn(*args)
    except RiskMonitorError:
        return None


# -- domain limit loader ----------------------------------------------------------------------
@FUZZ
@given(limit_documents)
def test_limit_documents_load_or_raise_config_error(document: Any) -> None:
    config = typed_only(load_limit_config, document)
    if config is None:
        return
    for limit in config.limits:  # what is accepted is sane
        for level in (limit.breach, limit.warn):
            assert level is None or (math.isfinite(level) and 0 < level <= max_level(limit.kind))


def test_a_breach_level_of_1e308_is_refused_for_every_kind() -> None:
    for kind, spec in KIND_SPECS.items():
        scope = {k: ("BTC" if k == "asset" else "binance") for k in spec.required}
        document = {"limits": [{"id": "x", "kind": kind.value, "scope": scope,
                                "breach": 1e308}]}
        error = typed_only(load_limit_config, document)
        assert error is None, kind
        ok = {"limits": [{"id": "x", "kind": kind.value, "scope": scope,
                          "breach": max_level(kind)}]}
        assert load_limit_config(ok).limits[0].breach == max_level(kind)


# -- configuration-service client -------------------------------------------------------------
responses = st.one_of(
    st.fixed_dictionaries(
        {"component": st.one_of(st.just("risk-monitor"), leaves),
         "version": st.one_of(st.text(min_size=1, max_size=200), leaves),
         "document": st.one_of(st.fixed_dictionaries({"limits": limit_documents},
                                                     optional={"alert_routing": anything,
                                                               "venues": anything}),
                               anything)},
        optional={"revision": anything, "updated_at": anything}),
    anything,
)


@FUZZ
@given(responses)
def test_config_responses_parse_or_raise_config_error(body: Any) -> None:
    doc = typed_only(ConfigDocument.from_response, body, )
    typed_only(lambda: ConfigDocument.from_response(body, expected_component="risk-monitor"))
    if doc is not None:
        typed_only(validate_document, doc.document)


@FUZZ
@given(st.one_of(limit_documents.map(lambda d: {"limits": d}), anything))
def test_config_documents_validate_or_raise_config_error(document: Any) -> None:
    typed_only(validate_document, document)


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b'{"component":"risk-monitor","version":"v","document":{"x":NaN}}',
                     b'{"component":"risk-monitor","version":"v","document":{"x":Infinity}}',
                     b'{"component":"risk-monitor","version":"v","document":{"limits":'
                     b'{"limits":[{"id":"a","kind":"gross_exposure","breach":1e308}]}}}',
                     b"\xff\xfe", b"null", b"[]", b'"text"']),
)


@FUZZ
@given(raw_bodies, st.sampled_from([200, 200, 304, 404, 429, 500, 503]))
def test_config_http_bodies_parse_or_raise_typed_errors(content: bytes, status: int) -> None:
    response = httpx.Response(status, content=content)
    typed_only(parse_response, response, "risk-monitor", "http://127.0.0.1:1/v1/config/risk-monitor")


# -- gRPC request validation ------------------------------------------------------------------
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
wire_doubles = st.floats(allow_nan=True, allow_infinity=True, width=64)
wire_text = st.one_of(st.text(max_size=300), st.sampled_from(["binance", "BTC/USDT:USDT",
                                                               "long", "short", ""]))


@FUZZ
@given(venue=wire_text, account=wire_text, instrument=wire_text, side=int32,
       quantity=wire_doubles, price=st.one_of(st.none(), wire_doubles),
       client_order_id=wire_text, position_side=wire_text)
def test_check_order_requests_validate_or_raise_data_validation_error(
        venue: str, account: str, instrument: str, side: int, quantity: float,
        price: float | None, client_order_id: str, position_side: str) -> None:
    request = pb.CheckOrderRequest(venue=venue, account=account, instrument=instrument,
                                   side=side,  # type: ignore[arg-type]
                                   quantity=quantity, client_order_id=client_order_id,
                                   position_side=position_side)
    if price is not None:
        request.price = price
    try:
        order = order_from_request(request)
    except DataValidationError as exc:
        assert exc.details.get("field")
        return
    assert math.isfinite(order.quantity) and 0 < order.quantity <= validation.MAX_ORDER_AMOUNT
    assert order.price is None or (math.isfinite(order.price) and order.price > 0)
    assert order.side in ("buy", "sell")


@FUZZ
@given(st.text(max_size=40), wire_doubles)
def test_watch_alert_arguments_validate_or_raise(cursor: str, heartbeat: float) -> None:
    start = typed_only(validation.cursor, "cursor", cursor)
    assert start is None or start >= 0
    interval = typed_only(validation.heartbeat, "heartbeat_interval_s", heartbeat, 15.0)
    assert interval is None or (validation.MIN_HEARTBEAT_S <= interval
                                <= validation.MAX_HEARTBEAT_S)


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=2000)))
def test_logged_request_values_are_bounded(value: str | None) -> None:
    shown = validation.loggable(value)
    assert shown is None or (len(shown) <= validation.LOG_VALUE_LIMIT + 24
                             and shown.isprintable())


# -- authentication inputs --------------------------------------------------------------------
GUARD = Authenticator({"RM_FUZZ_TOKEN": "fuzz-token-0123456789"})


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=200), st.binary(max_size=200)),
       st.one_of(st.none(), st.text(max_size=200)))
def test_credentials_are_matched_or_refused_never_raised(header: str | bytes | None,
                                                         cookie: str | None) -> None:
    assert GUARD.identify(header) in (None, "RM_FUZZ_TOKEN")
    assert GUARD.identify_session(cookie) in (None, "RM_FUZZ_TOKEN")
    assert GUARD.login(cookie or "") in (None, "RM_FUZZ_TOKEN")
