"""Who may call the service, over what, and how often: bearer tokens, TLS, stream rate limits.

- **Tokens** come from environment variables *named* in ``service.auth.token_envs`` (several for
  a rotation); they are compared in constant time and registered for log redaction. A client
  is known by the name of its token's variable, never by the token.
- **REST**: ``Authorization: Bearer <token>`` on every route except the probe paths left open
  in ``service.auth.open_paths``. Browsers use ``/login``: the token is posted once and an
  HttpOnly, SameSite=Strict cookie carries an HMAC of it (never the token itself).
- **gRPC**: ``authorization: Bearer <token>`` metadata; grpc.health.v1 may stay open for probes.
- **Exposure**: binding a non-loopback address with authentication off refuses to start
  unless the operator passes ``--insecure``.
- **Streams**: per-client cap on open streams and a token bucket on stream opens, so one client
  cannot hold the database busy with many watchers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import ipaddress
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import grpc
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from risk_monitor.platform.errors import AlertControlError, ConfigError, TradingControlError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings
from risk_monitor.platform.settings_service import ServiceSettings, TlsSettings

log = get_logger(__name__)

#: shortest token accepted: a guessable token is no authentication
MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "rm_session"
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_PATH = "/login"
#: pages a browser opens: an unauthenticated visit is sent to the login form, not a 401
BROWSER_PAGES = frozenset({"/", "/dashboard"})
MAX_LOGIN_BODY = 4096
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
_SESSION_CONTEXT = b"risk-monitor dashboard session v1"


# -- tokens -----------------------------------------------------------------------------------
class Authenticator:
    """Accepted bearer tokens by the name of the variable that holds each."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = {name: value.encode() for name, value in tokens.items()}
        self._sessions = {name: hmac.new(value, _SESSION_CONTEXT, hashlib.sha256).hexdigest()
                          .encode() for name, value in self._tokens.items()}

    @classmethod
    def from_env(cls, token_envs: Iterable[str]) -> Authenticator:
        """Read every named variable; a missing or short token refuses to start (fail closed)."""
        tokens: dict[str, str] = {}
        for name in token_envs:
            key = "service.auth.token_envs"
            value = Settings.require_secret(name, key=key).get_secret_value()
            if len(value) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"token in {name!r} is shorter than {MIN_TOKEN_LENGTH} "
                                  "characters", key=key)
            tokens[name] = value
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, authorization: str | bytes | None) -> str | None:
        """The token's name for a valid ``Bearer`` header value, else None."""
        if authorization is None:
            return None
        raw = authorization.encode("latin-1", "replace") if isinstance(authorization, str) \
            else authorization
        scheme, _, presented = raw.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return None
        return self._match(presented.strip(), self._tokens)

    def session_value(self, name: str) -> str:
        return self._sessions[name].decode()

    def identify_session(self, value: str | None) -> str | None:
        return self._match(value.encode("latin-1", "replace"), self._sessions) if value else None

    def login(self, presented: str) -> str | None:
        """The token's name when ``presented`` is an accepted token (login form)."""
        return self._match(presented.strip().encode("utf-8", "replace"), self._tokens)

    @staticmethod
    def _match(presented: bytes, candidates: Mapping[str, bytes]) -> str | None:
        found = None
        for name, expected in candidates.items():  # no early exit: timing says nothing
            if hmac.compare_digest(presented, expected):
                found = name
        return found


# -- exposure ---------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve anywhere: treat it as exposed


def check_exposure(service: ServiceSettings, authenticator: Authenticator, *,
                   insecure: bool) -> None:
    """Refuse to serve a non-loopback address without authentication unless ``insecure``."""
    exposed = [f"service.{key}={host}" for key, host in
               (("rest_host", service.rest_host), ("grpc_host", service.grpc_host))
               if not is_loopback(host)]
    if not exposed:
        return
    if not authenticator.enabled:
        if not insecure:
            raise ConfigError(
                f"refusing to serve {', '.join(exposed)} without authentication: set "
                "service.auth.token_envs (and service.tls), or pass --insecure to accept "
                "unauthenticated access", key="service.auth.token_envs")
        log.warning("service_insecure", exposed=exposed,
                    reason="--insecure: anyone who reaches these addresses reads the desk")
    elif service.tls is None:
        log.warning("service_plaintext", exposed=exposed,
                    reason="bearer tokens travel in clear without service.tls; terminate TLS "
                    "in front of the service")


# -- TLS --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @classmethod
    def load(cls, tls: TlsSettings) -> TlsFiles:
        pems: list[bytes] = []
        for key, path in (("service.tls.cert_file", tls.cert_file),
                          ("service.tls.key_file", tls.key_file)):
            try:
                pems.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read {key} {str(path)!r}: {exc.strerror}",
                                  key=key) from None
            if b"-----BEGIN" not in pems[-1]:
                raise ConfigError(f"{key} {str(path)!r} is not a PEM file", key=key)
        return cls(tls.cert_file, tls.key_file, pems[0], pems[1])

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])


# -- stream rate limits -----------------------------------------------------------------------
class StreamLimiter:
    """Per client: at most ``max_open`` concurrent streams and ``per_minute`` opens a minute."""

    MAX_CLIENTS = 10_000

    def __init__(self, max_open: int, per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_open = max_open
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.clock = clock
        self._open: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: str) -> str | None:
        """None when the stream may open (and is counted), else why not."""
        with self._lock:
            if self._open.get(client, 0) >= self.max_open:
                return f"too many open streams (limit {self.max_open} per client)"
            now = self.clock()
            tokens, at = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + max(0.0, now - at) * self.refill_per_s)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (f"stream opens rate-limited (limit {self.capacity:g} per minute "
                        "per client)")
            self._buckets[client] = (tokens - 1.0, now)
            self._open[client] = self._open.get(client, 0) + 1
            if len(self._buckets) > self.MAX_CLIENTS:
                self._prune(now)
            return None

    def release(self, client: str) -> None:
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)

    def _prune(self, now: float) -> None:
        """Forget clients with no open stream whose bucket refilled (bounded memory)."""
        full_after = self.capacity / self.refill_per_s if self.refill_per_s > 0 else math.inf
        for client, (_, at) in list(self._buckets.items()):
            if client not in self._open and now - at >= full_after:
                del self._buckets[client]


# -- everything the servers need, built once at start -----------------------------------------
@dataclass(frozen=True)
class ServiceSecurity:
    authenticator: Authenticator
    open_paths: frozenset[str]
    open_grpc_health: bool
    tls: TlsFiles | None
    limiter: StreamLimiter

    @classmethod
    def from_settings(cls, service: ServiceSettings, *, insecure: bool = False
                      ) -> ServiceSecurity:
        """Read tokens and certificates now: a bad one stops the start, never a request."""
        authenticator = Authenticator.from_env(service.auth.token_envs)
        check_exposure(service, authenticator, insecure=insecure)
        log.info("service_security", authentication=authenticator.enabled,
                 token_envs=list(service.auth.token_envs), tls=service.tls is not None,
                 open_paths=list(service.auth.open_paths),
                 open_grpc_health=service.auth.open_grpc_health)
        return cls(
            authenticator=authenticator, open_paths=frozenset(service.auth.open_paths),
            open_grpc_health=service.auth.open_grpc_health,
            tls=TlsFiles.load(service.tls) if service.tls is not None else None,
            limiter=StreamLimiter(service.rate_limits.max_streams_per_client,
                                  service.rate_limits.stream_opens_per_minute))

    @classmethod
    def open(cls) -> ServiceSecurity:
        """No authentication, no TLS, default stream limits (loopback in-process use)."""
        return cls.from_settings(ServiceSettings())


# -- REST -------------------------------------------------------------------------------------
def error_body(code: str, message: str) -> dict[str, Any]:
    """The typed error body every REST refusal carries."""
    return {"error": {"code": code, "message": message}}


class BearerAuthMiddleware:
    """ASGI middleware: a valid bearer token or dashboard session, or 401 (pages: to /login)."""

    def __init__(self, app: ASGIApp, security: ServiceSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = self.security.authenticator
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not auth.enabled or path in self.security.open_paths:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        client = auth.identify(headers.get(b"authorization")) or \
            auth.identify_session(_cookie(headers.get(b"cookie"), SESSION_COOKIE))
        if path == LOGIN_PATH:
            response: Response = await self._login(scope["method"], receive)
        elif client is not None:
            scope.setdefault("state", {})["client"] = client
            await self.app(scope, receive, send)
            return
        elif path in BROWSER_PAGES and scope["method"] in ("GET", "HEAD"):
            response = RedirectResponse(LOGIN_PATH, 303)
        else:
            response = JSONResponse(
                error_body("unauthenticated", "a valid bearer token is required"), 401,
                headers={"www-authenticate": 'Bearer realm="risk-monitor"'})
        await response(scope, receive, send)

    async def _login(self, method: str, receive: Receive) -> Response:
        if method in ("GET", "HEAD"):
            return HTMLResponse(LOGIN_PAGE.format(message=""), headers=_NO_STORE)
        if method != "POST":
            return JSONResponse(error_body("method_not_allowed", "use GET or POST"), 405)
        body = await _read_body(receive, MAX_LOGIN_BODY)
        token = ""
        if body is not None:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
            token = (form.get("token") or [""])[0]
        client = self.security.authenticator.login(token) if token else None
        if client is None:
            page = LOGIN_PAGE.format(message="<p role='alert'>Token not accepted.</p>")
            return HTMLResponse(page, 401, headers=_NO_STORE)
        log.info("dashboard_login", client=client)
        cookie = (f"{SESSION_COOKIE}={self.security.authenticator.session_value(client)}; "
                  f"Path=/; Max-Age={SESSION_MAX_AGE_S}; HttpOnly; SameSite=Strict")
        if self.security.tls is not None:
            cookie += "; Secure"
        return RedirectResponse("/dashboard", 303, headers={"set-cookie": cookie})


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Risk Monitor: sign in</title></head><body>
<h1>Risk Monitor</h1>{message}
<form method="post" action="/login"><label>Access token
<input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></body></html>"""
_NO_STORE = {"cache-control": "no-store"}


def _cookie(header: bytes | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# -- gRPC -------------------------------------------------------------------------------------
def peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5123`` / ``ipv6:[::1]:5123`` -> the address without the port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


Behaviour = Callable[..., Any]


#: the authenticated caller of the current unary gRPC call (its token's name), for audit
GRPC_CALLER: ContextVar[str | None] = ContextVar("grpc_caller", default=None)


def caller_identity(authenticated: str | None, author: object,
                    error: type[AlertControlError | TradingControlError]) -> str:
    """Who made an operator change: the bearer token's name, never a name the request claims;
    only a service without authentication (loopback development) takes the request's author."""
    if authenticated:
        return authenticated
    if isinstance(author, str) and author.strip():
        return author.strip()
    raise error("no caller identity: present a bearer token (or, on a service without "
                'authentication, give "author")')


class GrpcSecurityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bearer-token check on every call (health optionally open) and stream rate limits."""

    def __init__(self, security: ServiceSecurity) -> None:
        self.security = security

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        auth = self.security.authenticator
        client = "anonymous"
        open_method = self.security.open_grpc_health and method.startswith(HEALTH_METHOD_PREFIX)
        if auth.enabled and not open_method:
            metadata = {k: v for k, v in handler_call_details.invocation_metadata or ()}
            found = auth.identify(metadata.get("authorization"))
            if found is None:
                return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED,
                                 "a valid bearer token is required in 'authorization' metadata")
            client = found
        if handler.response_streaming and not handler.request_streaming:
            return _limited(handler, self.security.limiter, client)
        if auth.enabled and not open_method and not handler.request_streaming:
            return _with_caller(handler, client)
        return handler


def _with_caller(handler: grpc.RpcMethodHandler, client: str) -> grpc.RpcMethodHandler:
    """The same unary handler, with ``GRPC_CALLER`` set to the token's name while it runs."""
    behaviour: Behaviour = handler.unary_unary

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = GRPC_CALLER.set(client)
        try:
            return await behaviour(request, context)
        finally:
            GRPC_CALLER.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
              message: str) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _limited(handler: grpc.RpcMethodHandler, limiter: StreamLimiter,
             token_name: str) -> grpc.RpcMethodHandler:
    """The same unary-stream handler, counted against its client's stream limits."""
    behaviour: Behaviour = handler.unary_stream

    @contextlib.asynccontextmanager
    async def admitted(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        client = f"{token_name}@{peer_host(context.peer())}"
        refusal = limiter.acquire(client)
        if refusal is not None:
            log.warning("grpc_stream_refused", client=client, reason=refusal)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            yield
        finally:
            limiter.release(client)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with admitted(context):
            async for item in behaviour(request, context):
                yield item

    async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
        async with admitted(context):
            await behaviour(request, context)

    wrapped: Behaviour = stream if inspect.isasyncgenfunction(behaviour) else writer
    return grpc.unary_stream_rpc_method_handler(
        wrapped, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)
