"""The limit document in force: one rule for the service and every Dagster run.

Sources, in order, in the one vocabulary of ``config_service.SOURCE_*``:

1. configuration service disabled: the limits file (``file``);
2. enabled: the service's document (``service``), recorded in ``limit_config_versions``;
3. the service is unreachable or sends an invalid document: the last good service document,
   from the store (``store``: the newest version any process applied from the service, which
   is what the service keeps in force) or else the disk cache (``cache``);
4. none of them: the file's limits, every one UNKNOWN (fail closed). Never the file's levels in
   silence: the file may be looser than what the desk agreed.

A Dagster run asks :meth:`LimitConfigProvider.current` once. The service asks it at start, then
:class:`ConfigWatcher` long-polls the service and applies every new document through the same
provider (a failed poll changes nothing: the last good document stays in force).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from risk_monitor.adapters.config_service import (
    CONFIG_SERVICE_UP,
    NO_SERVICE_DOCUMENT,
    SERVICE_SOURCES,
    SOURCE_SERVICE,
    SOURCE_STORE,
    AppliedConfig,
    ConfigDocument,
    ConfigServiceLocator,
    ConfigState,
    document_version,
    load_limits_file,
    parse_response,
    transport_error,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql.config_versions import ConfigVersionStore
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.platform.errors import ConfigError, RiskMonitorError, ServiceError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import ConfigSource

log = get_logger(__name__)


@dataclass(frozen=True)
class LimitDocument:
    """The limit configuration in force, where it came from, and the document behind it."""

    config: LimitConfig
    source: str  # config_service.SOURCE_*
    document: dict[str, Any]  # the ``limits`` part, as recorded

    @property
    def version(self) -> str:
        return self.config.version


class LimitConfigProvider:
    """Answers "which limits are in force" (module docstring) and keeps the answer in ``state``.

    ``record``: record every trusted document applied in ``versions`` at once; the service
    starts with False (its database may not be there yet) and calls :meth:`start_recording`.
    """

    def __init__(self, settings: Settings, versions: ConfigVersionStore,
                 source: ConfigSource | None, *, record: bool = True) -> None:
        self.settings = settings
        self.versions = versions
        self.source = source
        cs = settings.config_service
        self.component = cs.component
        self.state = ConfigState(self.component, cache_path=cs.cache_path)
        self.recording = record
        self.last_fetch_error: str | None = None
        self.state.on_applied(self._record)

    def current(self) -> LimitDocument:
        """Fetch (or fall back, see the module docstring), apply, return what is in force."""
        if self.source is None:
            self.state.apply(self.base())
        elif not self._apply_fetched(self.source):
            self._apply_last_good()
        applied = self.state.current
        if applied is None:  # only an unreadable or invalid limits file gets here
            raise ConfigError(f"no valid limit document: {self.state.last_rejection}",
                              key="limits_file")
        return LimitDocument(applied.limits, applied.source, dict(applied.document["limits"]))

    def apply(self, doc: ConfigDocument) -> bool:
        """Apply a document the watcher fetched; False (last good kept) when it is invalid."""
        return self.state.apply(doc)

    def base(self) -> ConfigDocument:
        """The limits file; with the service enabled it is never trusted (fail closed)."""
        doc = load_limits_file(self.settings.effective_limits_file, self.component)
        return replace(doc, unavailable=NO_SERVICE_DOCUMENT) if self.source is not None else doc

    def start_recording(self) -> None:
        """Record from now on, starting with the document applied before the store existed."""
        self.recording = True
        if self.state.current is not None:
            self._record(self.state.current)

    def _apply_fetched(self, source: ConfigSource) -> bool:
        try:
            _version, document = source.fetch(self.component)
        except RiskMonitorError as exc:
            self.last_fetch_error = exc.message
            log.warning("config_service_unusable_keeping_last_good", error_code=exc.code,
                        error=exc.message)
            return False
        self.last_fetch_error = None
        return self.state.apply(ConfigDocument(component=self.component,
                                               version=document_version(document),
                                               document=document, source=SOURCE_SERVICE))

    def _apply_last_good(self) -> None:
        for known in (self._stored, self.state.read_cache):
            doc = known()
            if doc is not None and self.state.apply(doc):
                return
        log.error("no_limit_document_known_failing_closed", reason=NO_SERVICE_DOCUMENT)
        self.state.apply(self.base())

    def _stored(self) -> ConfigDocument | None:
        """The newest service document any process applied, from the store (``store``)."""
        try:
            history = self.versions.history(limit=50)
        except Exception as exc:  # no schema yet, database down: the disk cache is next
            log.warning("config_last_good_unreadable",
                        error=str(map_exception(exc, source="database")))
            return None
        for known in history:
            if known.source in SERVICE_SOURCES:
                document = {"limits": known.document}
                return ConfigDocument(component=self.component,
                                      version=document_version(document),
                                      document=document, source=SOURCE_STORE)
        return None

    def _record(self, applied: AppliedConfig) -> None:
        """A document that is not trusted is never recorded (it must not become last good)."""
        if self.recording and not applied.limits.unavailable:
            self.versions.record(applied.limits_version, dict(applied.document["limits"]),
                                 source=applied.source, applied_at=applied.applied_at)


@dataclass
class WatcherStatus:
    """Liveness of the watch loop, for /readyz."""

    connected: bool = False
    last_error: str | None = None
    last_contact: datetime | None = None
    polls: int = 0
    failures: int = 0


class ConfigWatcher:
    """The service's loop around ``provider``: its answer at start, then every new document
    the configuration service publishes (long poll), applied through the provider."""

    def __init__(self, provider: LimitConfigProvider,
                 locator: ConfigServiceLocator | None) -> None:
        self.provider = provider
        self.locator = locator
        self.settings = provider.settings.config_service
        self.resilience = provider.settings.resilience
        self.status = WatcherStatus()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.provider.current)
        except ConfigError as exc:  # start anyway, not ready: every limit stays UNKNOWN
            log.error("no_valid_limit_document_at_start", error=exc.message)
        if self.provider.source is None or self.locator is None:
            return
        error = self.provider.last_fetch_error
        self._contact(ok=error is None, error=error)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.resilience.timeout_s))
        self._task = asyncio.create_task(self._run(), name="config-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _fetch(self, *, after: str | None) -> ConfigDocument | None:
        assert self._client is not None and self.locator is not None
        base = await asyncio.to_thread(self.locator.url)
        component = self.provider.component
        url = f"{base}/v1/config/{component}"
        wait_s = self.settings.poll_timeout_s
        params = {"wait_s": f"{wait_s:g}", **({"after": after} if after else {})}
        try:
            response = await self._client.get(
                url, params=params, timeout=httpx.Timeout(self.resilience.timeout_s + wait_s))
        except httpx.HTTPError as exc:
            self.locator.failed()
            self._contact(ok=False, error=str(exc))
            raise transport_error(exc, url) from exc
        self.status.polls += 1
        if response.status_code == 404:
            self._contact(ok=True)
            return None  # nothing published for this component yet: keep what we have
        try:
            doc = parse_response(response, component, url)
        except RiskMonitorError as exc:
            self._contact(ok=response.status_code < 500, error=str(exc))
            if isinstance(exc, ServiceError) and exc.retryable:
                self.locator.failed()
            raise
        self._contact(ok=True)
        return doc

    def _contact(self, *, ok: bool, error: str | None = None) -> None:
        self.status.connected = ok
        CONFIG_SERVICE_UP.labels(component=self.provider.component).set(1 if ok else 0)
        if ok:
            self.status.last_contact = datetime.now(UTC)
            self.status.last_error = None
        else:
            self.status.failures += 1
            self.status.last_error = error

    async def _run(self) -> None:
        delay = self.resilience.backoff_initial_s
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                # ``after`` = newest version seen (applied or rejected): wait only for news
                doc = await self._fetch(after=self.provider.state.last_seen_version)
            except RiskMonitorError as exc:
                record_error(exc)
                log.warning("config_watch_failed", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.resilience.backoff_max_s)
                continue
            delay = self.resilience.backoff_initial_s
            if doc is not None:
                await asyncio.to_thread(self.provider.apply, doc)
            elif loop.time() - started < self.settings.poll_timeout_s / 2:
                # the server did not hold the poll (e.g. 404 at once): do not spin
                await asyncio.sleep(min(self.settings.poll_timeout_s, 5.0))

    def readiness(self) -> dict[str, Any]:
        status = self.provider.state.status()
        status.update({
            "enabled": self.settings.enabled,
            "service_connected": self.status.connected,
            "service_last_error": self.status.last_error,
            "service_last_contact": (self.status.last_contact.isoformat()
                                     if self.status.last_contact else None),
        })
        return status
