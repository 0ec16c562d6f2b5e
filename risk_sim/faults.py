"""Fault injection shared by every simulator, switchable at run time.

A simulator owns a :class:`FaultInjector`; faults are added from Python (tests, scenarios) or
over HTTP (``POST /__admin/faults``). The aiohttp middleware applies transport faults before
the handler runs (latency, timeouts, 429 and 5xx bursts, hangs) and payload faults to JSON
responses after it (malformed or partial bodies, NaN / negative / absurd numbers, stale or
skewed timestamps). Websocket servers ask :meth:`FaultInjector.take` themselves for
``disconnect`` and the payload kinds.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal[
    "latency",  # params: seconds
    "timeout",  # hang for params.seconds (default 120) before answering 504
    "http_error",  # params: status (default 500)
    "rate_limit",  # 429 with the venue's body; params: retry_after
    "auth_error",  # the venue's authentication error
    "malformed",  # body is cut in half (invalid JSON)
    "partial",  # lists lose half their items, objects lose params.drop keys
    "nan",  # numeric fields become NaN
    "negative",  # numeric fields become negative
    "absurd",  # numeric fields multiplied by params.factor (default 1e12)
    "stale",  # timestamp fields moved params.seconds (default 3600) into the past
    "skew",  # timestamp fields moved params.seconds (default 600) into the future
    "disconnect",  # websocket: close the connection
]

TRANSPORT_KINDS = frozenset({"latency", "timeout", "http_error", "rate_limit", "auth_error"})
PAYLOAD_KINDS = frozenset({"malformed", "partial", "nan", "negative", "absurd", "stale", "skew"})

#: keys whose values hold timestamps (ms or s since epoch, or ISO strings) in venue payloads
TIME_KEYS = frozenset({
    "timestamp", "time", "ts", "E", "T", "updateTime", "uTime", "cTime", "serverTime",
    "updatedAt", "createdAt", "lastUpdated", "closeTime", "openTime", "C", "O",
    "nextFundingTime", "fundingTime",
})
#: keys never touched by numeric faults (ids, counts, paging)
NON_NUMERIC_KEYS = frozenset({"id", "name", "customerRefId", "bot_id", "code", "orderId",
                              "firstId", "lastId", "lastUpdateId", "tradeId", "posId", "ordId",
                              "u", "F", "L", "n", "limit", "count", "page", "leverage", "contractSize",
                              "pricePrecision", "quantityPrecision", "lotSz", "tickSz", "ctVal",
                              "minSz", "ct", "E", "T"})


@dataclass
class Fault:
    """One fault rule: what, where (glob on the request path) and how often."""

    kind: FaultKind
    route: str = "*"
    probability: float = 1.0
    count: int | None = None  # remaining activations; None = until cleared
    params: dict[str, Any] = field(default_factory=dict)
    id: int = 0

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.route)


ErrorBody = Callable[[Fault, web.Request], web.StreamResponse]


class FaultInjector:
    """Thread-safe fault rules; the same object is read by the server loop and tests."""

    def __init__(self, seed: int = 0) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._next_id = 1
        self.fired: list[tuple[float, str, str]] = []  # (time, kind, path) for assertions

    def add(self, kind: FaultKind, route: str = "*", *, probability: float = 1.0,
            count: int | None = None, **params: Any) -> Fault:
        with self._lock:
            fault = Fault(kind=kind, route=route, probability=probability, count=count,
                          params=params, id=self._next_id)
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def remove(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, path: str, kinds: frozenset[str] | None = None) -> list[Fault]:
        """Faults that fire for this request now (consuming one activation each)."""
        fired: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if kinds is not None and fault.kind not in kinds:
                    continue
                if not fault.matches(path):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fired.append(fault)
                self.fired.append((time.time(), fault.kind, path))
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
        return fired

    # -- aiohttp integration ------------------------------------------------------------------
    def middleware(self, error_body: ErrorBody | None = None) -> Any:
        """Middleware applying transport and payload faults; ``error_body`` renders venue errors."""

        @web.middleware
        async def fault_middleware(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if request.path.startswith("/__admin"):
                return await handler(request)
            for fault in self.take(request.path, TRANSPORT_KINDS):
                if fault.kind == "latency":
                    await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
                elif fault.kind == "timeout":
                    await asyncio.sleep(float(fault.params.get("seconds", 120.0)))
                    return web.json_response({"error": "gateway timeout"}, status=504)
                elif error_body is not None:
                    return error_body(fault, request)
                else:
                    return default_error_body(fault, request)
            response = await handler(request)
            payload_faults = self.take(request.path, PAYLOAD_KINDS)
            if payload_faults and isinstance(response, web.Response) and response.body is not None:
                body = response.body if isinstance(response.body, bytes) else b""
                for fault in payload_faults:
                    body = apply_payload_fault(fault, body)
                response = web.Response(body=body, status=response.status,
                                        content_type=response.content_type)
            return response

        return fault_middleware

    def admin_routes(self) -> list[web.RouteDef]:
        """``GET/POST/DELETE /__admin/faults`` to switch faults from another process."""

        async def list_faults(_: web.Request) -> web.Response:
            return web.json_response([asdict(f) for f in self.snapshot()])

        async def add_fault(request: web.Request) -> web.Response:
            body = await request.json()
            fault = self.add(body["kind"], body.get("route", "*"),
                             probability=float(body.get("probability", 1.0)),
                             count=body.get("count"), **body.get("params", {}))
            return web.json_response(asdict(fault))

        async def clear_faults(_: web.Request) -> web.Response:
            self.clear()
            return web.json_response({"ok": True})

        return [
            web.get("/__admin/faults", list_faults),
            web.post("/__admin/faults", add_fault),
            web.delete("/__admin/faults", clear_faults),
        ]


def default_error_body(fault: Fault, _: web.Request) -> web.Response:
    if fault.kind == "rate_limit":
        retry_after = str(fault.params.get("retry_after", 1))
        return web.json_response({"error": "rate limited"}, status=429,
                                 headers={"Retry-After": retry_after})
    if fault.kind == "auth_error":
        return web.json_response({"error": "unauthorized"}, status=401)
    return web.json_response({"error": "injected failure"},
                             status=int(fault.params.get("status", 500)))


# -- payload transforms ---------------------------------------------------------------------------
def apply_payload_fault(fault: Fault, body: bytes) -> bytes:
    if fault.kind == "malformed":
        return body[: max(1, len(body) // 2)]
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(transform_payload(fault, data)).encode()


def transform_payload(fault: Fault, data: Any) -> Any:
    """Apply a payload fault to a decoded JSON document (also used by websocket servers)."""
    now_ms = time.time() * 1000
    kind = fault.kind

    def number(value: Any) -> Any:
        as_float: float | None
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            return value
        if math.isnan(as_float) or as_float == 0:
            return value
        if kind == "nan":
            new = float("nan")
        elif kind == "negative":
            new = -abs(as_float)
        elif kind == "absurd":
            new = as_float * float(fault.params.get("factor", 1e12))
        else:
            return value
        return str(new) if isinstance(value, str) else new

    def shift_time(value: Any) -> Any:
        seconds = float(fault.params.get("seconds", 3600 if kind == "stale" else 600))
        delta = -seconds if kind == "stale" else seconds
        try:
            number_value = float(value)
        except (TypeError, ValueError):
            return value
        scale = 1000.0 if number_value > 1e11 else 1.0  # ms vs s
        if number_value <= 0 or abs(number_value / scale * 1000 - now_ms) > 10 * 365 * 86400e3:
            return value
        shifted = number_value + delta * scale
        if isinstance(value, str):
            return str(int(shifted))
        return int(shifted) if isinstance(value, int) else shifted

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            if kind == "partial":
                drop = set(fault.params.get("drop", []))
                node = {k: v for k, v in node.items() if k not in drop}
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            items = node[: (len(node) + 1) // 2] if kind == "partial" and len(node) > 1 else node
            return [walk(v, key) for v in items]
        if key is None:
            return node
        if kind in ("stale", "skew") and key in TIME_KEYS:
            return shift_time(node)
        if kind in ("nan", "negative", "absurd") and key not in NON_NUMERIC_KEYS \
                and key not in TIME_KEYS and not isinstance(node, bool):
            only = fault.params.get("keys")
            if only is None or key in only:
                return number(node)
        return node

    return walk(data)
