"""Configuration-service simulator: versioned JSON documents per component, with long-poll.

Speaks the contract in docs/config-service-contract.md: ``GET /v1/config/{component}`` (ETag,
``If-None-Match``, long-poll with ``wait_s`` + ``after``), ``PUT /v1/config/{component}``
(optional ``If-Match``), ``GET /v1/config``, ``GET /healthz``. A version is the first 16 hex
digits of the SHA-256 of the document's canonical JSON, so publishing the same content twice is
a no-op and clients never reload for nothing; ``revision`` counts the changes per component.

Given a ``redis_url`` it registers itself for discovery with the same key scheme as
``risk_monitor.adapters.redis_registry`` (hash ``<prefix>:<service>:<instance>``, HSET + PEXPIRE
in MULTI, refreshed at TTL/3, deleted on stop). It writes the keys itself instead of importing
the production registry, so a test of the production client against it checks the documented
contract rather than the code agreeing with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from risk_sim.faults import FaultInjector
from risk_sim.server import BackgroundServer

MAX_WAIT_S = 60.0


def document_version(document: Mapping[str, Any]) -> str:
    """Content version: sha256 of the canonical JSON (sorted keys, no spaces), 16 hex digits."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class _Entry:
    component: str
    version: str
    revision: int
    document: dict[str, Any]
    updated_at: str

    def body(self) -> dict[str, Any]:
        return {"component": self.component, "version": self.version,
                "revision": self.revision, "updated_at": self.updated_at,
                "document": self.document}


class ConfigServiceSimulator:
    """Loopback configuration service; ``publish`` from Python or ``PUT`` over HTTP."""

    def __init__(self, *, redis_url: str | None = None,
                 initial: dict[str, dict[str, Any]] | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 service_name: str = "config-service", registry_prefix: str = "svc",
                 registry_ttl_s: float = 10.0, instance_id: str | None = None) -> None:
        self.faults = FaultInjector()
        self.redis_url = redis_url
        self.service_name = service_name
        self.registry_prefix = registry_prefix
        self.registry_ttl_s = registry_ttl_s
        self.instance_id = instance_id or f"config-sim-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self._entries: dict[str, _Entry] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self.requests: list[dict[str, Any]] = []  # method, path, query, status: for assertions
        self._started_at = ""
        for component, document in (initial or {}).items():
            self._store(component, document)
        app = web.Application(middlewares=[self._record, self.faults.middleware()])
        app.add_routes([
            web.get("/healthz", self._health),
            web.get("/v1/config", self._list),
            web.get("/v1/config/{component}", self._get),
            web.put("/v1/config/{component}", self._put),
            *self.faults.admin_routes(),
        ])
        if redis_url:
            app.cleanup_ctx.append(self._registration)
        self._server = BackgroundServer(app, host=host, port=port, name="config-service")

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def registry_key(self) -> str:
        return f"{self.registry_prefix}:{self.service_name}:{self.instance_id}"

    def start(self) -> ConfigServiceSimulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ConfigServiceSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- Python API -----------------------------------------------------------------------------
    def publish(self, component: str, document: dict[str, Any]) -> str:
        """Store a new document version and wake long-polls; returns the version."""
        if self._server.loop is not None and self._server.loop.is_running():
            async def on_loop() -> str:
                return self._store(component, document).version

            return self._server.call(on_loop)
        return self._store(component, document).version

    def current(self, component: str) -> dict[str, Any] | None:
        """The stored entry as the API returns it (None when never published)."""
        entry = self._entries.get(component)
        return copy.deepcopy(entry.body()) if entry else None

    # -- internals ------------------------------------------------------------------------------
    def _store(self, component: str, document: Mapping[str, Any]) -> _Entry:
        if not isinstance(document, Mapping):
            raise TypeError("a configuration document must be a JSON object")
        doc = json.loads(json.dumps(document, allow_nan=False))  # JSON-clean deep copy
        version = document_version(doc)
        old = self._entries.get(component)
        if old is not None and old.version == version:
            return old
        entry = _Entry(component=component, version=version,
                       revision=(old.revision + 1) if old else 1, document=doc,
                       updated_at=datetime.now(UTC).isoformat())
        self._entries[component] = entry
        event = self._changed.pop(component, None)
        if event is not None:
            event.set()  # waiters re-check; the next wait gets a fresh event
        return entry

    def _event(self, component: str) -> asyncio.Event:
        event = self._changed.get(component)
        if event is None:
            event = self._changed[component] = asyncio.Event()
        return event

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        self.requests.append({"method": request.method, "path": request.path,
                              "query": dict(request.query), "status": response.status,
                              "at": time.time()})
        return response

    @staticmethod
    def _etag(version: str) -> str:
        return f'"{version}"'

    def _ok(self, entry: _Entry) -> web.Response:
        return web.json_response(entry.body(), headers={"ETag": self._etag(entry.version)})

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "components": len(self._entries)})

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response({"components": [
            {k: v for k, v in e.body().items() if k != "document"}
            for e in sorted(self._entries.values(), key=lambda e: e.component)
        ]})

    async def _get(self, request: web.Request) -> web.Response:
        component = request.match_info["component"]
        try:
            wait_s = min(max(float(request.query.get("wait_s", "0")), 0.0), MAX_WAIT_S)
        except ValueError:
            return web.json_response({"error": "bad_request", "message": "wait_s must be a number"},
                                     status=400)
        after = request.query.get("after") or _unquote(request.headers.get("If-None-Match"))
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            entry = self._entries.get(component)
            if entry is not None and entry.version != after:
                return self._ok(entry)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            event = self._event(component)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=remaining)
        if entry is None:
            return web.json_response({"error": "not_found",
                                      "message": f"no configuration for {component!r}"},
                                     status=404)
        return web.Response(status=304, headers={"ETag": self._etag(entry.version)})

    async def _put(self, request: web.Request) -> web.Response:
        component = request.match_info["component"]
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "bad_request", "message": "body is not JSON"},
                                     status=400)
        if not isinstance(body, dict) or not isinstance(body.get("document"), dict):
            return web.json_response(
                {"error": "bad_request", "message": 'body must be {"document": {...}}'},
                status=400)
        expected = _unquote(request.headers.get("If-Match"))
        current = self._entries.get(component)
        if expected is not None and (current is None or current.version != expected):
            return web.json_response(
                {"error": "precondition_failed",
                 "current_version": current.version if current else None}, status=412)
        before = current.version if current else None
        try:
            entry = self._store(component, body["document"])
        except ValueError as exc:  # NaN / Infinity are not JSON
            return web.json_response({"error": "bad_request", "message": str(exc)}, status=400)
        payload = {k: v for k, v in entry.body().items() if k != "document"}
        payload["changed"] = entry.version != before
        return web.json_response(payload, headers={"ETag": self._etag(entry.version)})

    # -- discovery registration -----------------------------------------------------------------
    def _registration_fields(self) -> dict[Any, Any]:
        now = datetime.now(UTC).isoformat()
        return {
            "service": self.service_name,
            "instance_id": self.instance_id,
            "grpc_address": "",
            "rest_url": self.url,
            "version": "risk-sim",
            "venues": "[]",
            "started_at": self._started_at,
            "heartbeat_at": now,
            "ttl_s": repr(float(self.registry_ttl_s)),
            "metadata": json.dumps({"simulator": True}),
        }

    async def _registration(self, _: web.Application) -> AsyncIterator[None]:
        import redis.asyncio as aioredis

        assert self.redis_url is not None
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=2,
                                         socket_connect_timeout=2)
        self._started_at = datetime.now(UTC).isoformat()
        key = self.registry_key
        ttl_ms = max(1, int(self.registry_ttl_s * 1000))

        async def write() -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=self._registration_fields())
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.registry_ttl_s / 3)
                with contextlib.suppress(Exception):  # Redis down: retry next beat
                    await write()

        await write()
        task = asyncio.create_task(heartbeat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await client.delete(key)
            await client.aclose()


def _unquote(etag: str | None) -> str | None:
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None
