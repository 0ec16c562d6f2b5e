"""REST side of the service (Starlette on uvicorn): liveness, readiness, metrics, risk status.

- ``GET /healthz``: liveness. 200 while the event loop answers; it checks nothing external, so
  an orchestrator never restarts a healthy process because PostgreSQL blinked.
- ``GET /readyz``: readiness. 200 when every critical check passes, 503 otherwise (and while
  draining); the JSON body lists each check.
- ``GET /metrics``: Prometheus text format from the default registry (which also holds the
  database collector when the storage layer provides one).
- ``GET /v1/risk/status``: the same summary as gRPC ``GetRiskStatus``, as JSON.
- ``GET /`` and ``/dashboard``: the risk dashboard page, fed by ``/v1/dashboard/*``
  (``service/dashboard.py``).
- ``/v1/alerts/*`` and ``/v1/trading/*``: the operator controls (``service/controls_api.py``).
- ``GET|POST /login``: when tokens are configured, the dashboard's sign-in form
  (``service/security.py``); every other route then needs a bearer token or the session
  cookie, except the probe paths left open in ``service.auth.open_paths``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from risk_monitor import __version__
from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform.logging import get_logger, redact_text
from risk_monitor.platform.metrics import record_error
from risk_monitor.service.controls_api import alert_control_routes, trading_routes
from risk_monitor.service.dashboard import Dashboard, dashboard_routes
from risk_monitor.service.health import Readiness
from risk_monitor.service.security import (
    BearerAuthMiddleware,
    ServiceSecurity,
    TlsFiles,
    error_body,
)
from risk_monitor.service.state import RiskViewProvider
from risk_monitor.service.trading import TradingControl
from risk_monitor.service.trading_dashboard import TradingDashboard, trading_dashboard_routes
from risk_monitor.service.validation import loggable

log = get_logger(__name__)

#: request line + headers; uvicorn's h11 default is 16 KB already, stated here on purpose
MAX_HEADER_BYTES = 16 * 1024


def build_app(readiness: Readiness, provider: RiskViewProvider, *,
              identity: Mapping[str, Any],
              config_status: Callable[[], Mapping[str, Any] | None] = lambda: None,
              registry: CollectorRegistry = REGISTRY,
              security: ServiceSecurity | None = None,
              trading: TradingControl | None = None,
              trading_dashboard: TradingDashboard | None = None) -> Starlette:
    """The routes, behind bearer-token authentication when ``security`` has tokens."""
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", "version": __version__, **identity})

    async def readyz(_: Request) -> JSONResponse:
        body = readiness.as_dict()
        body.update(identity)
        body["config"] = dict(config_status() or {})  # live, not as of the last check run
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    async def metrics(_: Request) -> Response:
        # collectors may query the database: keep that off the event loop
        payload = await asyncio.to_thread(generate_latest, registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    async def risk_status(_: Request) -> JSONResponse:
        now = datetime.now(UTC)
        view = await asyncio.to_thread(provider.risk_view, now)
        config = config_status() or {}
        return JSONResponse({
            "status": view.status,
            "as_of": view.as_of.isoformat() if view.as_of else None,
            "equity": view.equity,
            "gross_exposure": view.gross_exposure,
            "net_exposure": view.net_exposure,
            "limit_config_version": view.limit_config_version or config.get("limits_version"),
            "config_document_version": config.get("version"),
            "config_source": config.get("source"),
            "evaluation_source": view.evaluation_source,
            "status_counts": dict(view.counts),
            "sources": [{"source": s.key, "ok": s.ok, "as_of": s.as_of.isoformat(),
                         "age_seconds": s.age_s, "stale": s.stale, "error_code": s.error_code}
                        for s in view.sources],
        })

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/risk/status", risk_status),
        *dashboard_routes(Dashboard.for_provider(provider, config_status=config_status)),
        *alert_control_routes(provider),
        *(trading_routes(trading) if trading is not None else ()),
        *(trading_dashboard_routes(trading_dashboard) if trading_dashboard is not None
          else ()),
    ], middleware=[Middleware(BearerAuthMiddleware, security=security or ServiceSecurity.open())],
        exception_handlers={HTTPException: _http_error, Exception: _server_error})


_HTTP_CODES = {400: "invalid_argument", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 422: "invalid_argument"}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Every refusal carries the typed body ``{"error": {"code", "message"}}``."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                        headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """Our error code and a redacted message; never a library's text or stack."""
    error = map_exception(exc, source="rest")
    record_error(error)
    log.warning("rest_call_failed", path=loggable(request.url.path), error=str(error))
    return JSONResponse(error_body(error.code, redact_text(error.message)),
                        status_code=503 if error.retryable else 500)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestServer:
    """uvicorn serving ``app`` on an already bound socket, inside the current event loop."""

    def __init__(self, app: Starlette, *, host: str, port: int,
                 tls: TlsFiles | None = None) -> None:
        self.app = app
        self.tls = tls
        self.host = host
        self.requested_port = port
        self.port = 0
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        # the service logs its own start/stop lines; uvicorn's would only repeat them
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        # bind before serving, so port 0 resolves to a real port we can register
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        tls: dict[str, Any] = {} if self.tls is None else {
            "ssl_certfile": str(self.tls.cert_file), "ssl_keyfile": str(self.tls.key_file)}
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=5, server_header=False,
                                h11_max_incomplete_event_size=MAX_HEADER_BYTES, **tls)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]),
                                         name="rest-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("REST server stopped during start-up")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
        if self._socket is not None:
            self._socket.close()
