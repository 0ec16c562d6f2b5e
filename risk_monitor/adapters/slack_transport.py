"""slack_sdk's ``WebClient`` over persistent keep-alive HTTP connections.

The stock client goes through ``urllib.request.urlopen`` with an SSL context: every call builds
a new opener and opens (and closes) a new TCP (+TLS) connection, which cost ~2-4 ms per alert
on loopback and a TLS handshake per alert against slack.com. :class:`KeepAliveWebClient` keeps
the client's whole behaviour (argument handling, retry handlers, 429 ``Retry-After``,
``SlackApiError``) and replaces only the transport step: a small pool of
``http.client`` connections, reused across calls and threads.

Each request goes out in one write (request line, headers and body): ``http.client`` writes the
headers and the body separately, and between the two writes the posting thread drops and must
retake the interpreter lock, which in a busy service waits behind the other threads (their
switch interval, and the CPU run queue on a loaded machine) while the server holds half a
request; the server also reads one segment instead of two. :meth:`KeepAliveWebClient.bounded`
caps the socket waits of one thread's requests (the dispatcher's post on the committing thread).
:meth:`KeepAliveWebClient.gated` lets one thread build a request completely (slack_sdk's
arguments, JSON body, headers: ~0.3 ms of CPU) and hand its bytes to a gate, which sends them
once the transaction behind the post committed (``dispatch_policy.SendGate``).
:meth:`KeepAliveWebClient.keep_warm` keeps one connection open through quiet spells (a cheap
``api.test`` on it before ``IDLE_S``), so the first alert after a quiet hour does not pay a TCP
and TLS handshake to slack.com. slack_sdk's request log line (the whole JSON body, formatted on
every call while its logger's level is unset) is formatted only while that logger is enabled
for DEBUG.

A reused connection that the server closed while idle fails on send or before any response
byte (``RemoteDisconnected``, reset, broken pipe): the request was then not processed, and it
is sent once more on a fresh connection. Connections idle longer than ``IDLE_S`` are not
reused at all (servers close idle keep-alive connections after tens of seconds), so that
retry is rare. Anything else propagates as before; the outbox's retry and its adoption check
(``SlackNotifier.find_sent``) still guard against a double post.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import Request

from slack_sdk import WebClient

#: a pooled connection idle longer than this is closed instead of reused
IDLE_S = 20.0
#: connections kept per client (the dispatcher delivers with a few threads at most)
POOL_SIZE = 4
#: :meth:`KeepAliveWebClient.keep_warm` sends a cheap request on a connection idle this long
WARM_S = 15.0
WARM_TIMEOUT_S = 2.0
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


_SDK_LOG = logging.getLogger("slack_sdk.web.base_client")


class _SdkLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """slack_sdk's own logger, whose ``level`` reads as its effective level: slack_sdk
    formats its per-request debug line (the whole body) whenever ``logger.level <= DEBUG``,
    which an unset level (0) always is; now only when DEBUG is on, as set at the time."""

    @property
    def level(self) -> int:
        return self.logger.getEffectiveLevel()


class Gate(Protocol):
    """Where a gated thread's request bytes go instead of the socket (``SendGate``)."""

    def through(self, send: Callable[[bytes], None], data: bytes) -> None: ...


#: .gate: the gate of this thread's requests, while :meth:`KeepAliveWebClient.gated`
_GATED = threading.local()


class _OneWrite(http.client.HTTPConnection):
    """Writes a request with a bytes body in one ``send`` (module doc), through the thread's
    gate if it has one; the rest as before."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        gate: Gate | None = getattr(_GATED, "gate", None)
        if not isinstance(message_body, bytes) or encode_chunked:
            if gate is not None:  # not built in one piece: held until the gate opens
                gate.through(lambda _: None, b"")
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        if gate is None:
            self.send(head + message_body)
        else:
            gate.through(self.send, head + message_body)


class _Connection(_OneWrite):
    pass


class _SecureConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class KeepAliveWebClient(WebClient):
    """``WebClient`` whose requests reuse HTTP/1.1 keep-alive connections (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("logger", _SdkLogger(_SDK_LOG))
        super().__init__(*args, **kwargs)
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._idle_lock = threading.Lock()
        self._bound = threading.local()  # .timeout: this thread's cap, while bounded()

    @contextlib.contextmanager
    def bounded(self, timeout_s: float) -> Iterator[None]:
        """This thread's requests inside wait at most ``timeout_s`` per connect, send or
        receive (instead of the client's ``timeout``); the socket error then propagates."""
        previous = getattr(self._bound, "timeout", None)
        self._bound.timeout = timeout_s
        try:
            yield
        finally:
            self._bound.timeout = previous

    @contextlib.contextmanager
    def gated(self, gate: Gate) -> Iterator[None]:
        """This thread's requests inside are built, then their bytes handed to ``gate``
        (module doc); an error the gate raises propagates as any send error."""
        previous = getattr(_GATED, "gate", None)
        _GATED.gate = gate
        try:
            yield
        finally:
            _GATED.gate = previous

    def keep_warm(self, stop: threading.Event, idle_s: float = WARM_S) -> None:
        """Until ``stop`` is set: whenever no pooled connection was used for ``idle_s``
        (below ``IDLE_S``), or none is open, call ``api.test``, which opens or refreshes
        one. A failure (Slack down) is left to the next round; the dispatcher reports it."""
        while not stop.wait(idle_s / 3):
            with self._idle_lock:
                newest = self._idle[-1][0] if self._idle else None
            if newest is not None and time.monotonic() - newest < idle_s:
                continue
            try:
                with self.bounded(WARM_TIMEOUT_S):  # a hanging Slack holds no shutdown long
                    self.api_test()
            except Exception as exc:
                _SDK_LOG.debug("keep-warm request failed: %s", type(exc).__name__)

    def _timeout(self) -> float | None:
        bound: float | None = getattr(self._bound, "timeout", None)
        return bound if bound is not None else self.timeout

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        parts = urlsplit(url)
        if self.proxy is not None or parts.scheme.lower() not in ("http", "https"):
            return super()._perform_urllib_http_request_internal(url, req)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {k: str(v) for k, v in req.header_items()}
        headers.pop("Connection", None)
        body: bytes | None = req.data  # type: ignore[assignment]  # slack_sdk sends bytes
        conn, reused = self._checkout(parts.scheme.lower(), parts.hostname or "", parts.port)
        try:
            try:
                response = self._exchange(conn, target, headers, body)
            except _STALE:
                conn.close()
                if not reused:
                    raise
                conn, reused = self._connect(parts.scheme.lower(), parts.hostname or "",
                                             parts.port), False
                response = self._exchange(conn, target, headers, body)
            status, reason, message, data, closes = response
        except BaseException:
            conn.close()
            raise
        if closes:
            conn.close()
        else:
            self._checkin(conn)
        if status >= 400:  # what urlopen raises: slack_sdk's retry handlers read it
            raise urllib.error.HTTPError(url, status, reason, message, io.BytesIO(data))
        charset = message.get_content_charset() or "utf-8"
        body_out: str | bytes = data if message.get_content_type() == "application/gzip" \
            else data.decode(charset)
        return {"status": status, "headers": message, "body": body_out}

    def _exchange(self, conn: http.client.HTTPConnection, target: str,
                  headers: dict[str, str], body: bytes | None
                  ) -> tuple[int, str, http.client.HTTPMessage, bytes, bool]:
        timeout = self._timeout()
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, response.reason, response.msg, data, response.will_close

    def _connect(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        if scheme == "https":
            return _SecureConnection(host, port, timeout=self._timeout(), context=self.ssl)
        return _Connection(host, port, timeout=self._timeout())

    def _checkout(self, scheme: str, host: str, port: int | None
                  ) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled connection to this host (reused: True), else a new one."""
        now = time.monotonic()
        expected = (host, port or (443 if scheme == "https" else 80), scheme == "https")
        with self._idle_lock:
            while self._idle:
                since, conn = self._idle.pop()
                same = (conn.host, conn.port, isinstance(conn, http.client.HTTPSConnection))
                if now - since <= IDLE_S and same == expected:
                    return conn, True
                conn.close()
        return self._connect(scheme, host, port), False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        """Close the pooled connections (the client stays usable)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

