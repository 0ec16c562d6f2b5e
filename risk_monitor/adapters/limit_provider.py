"""The limit document in force: one rule for the service and every Dagster run.

Sources, in order, in the one vocabulary of ``config_service.SOURCE_*``:

1. configuration service disabled: the limits file (``file``);
2. enabled: the service's document (``service``), recorded in ``limit_config_versions``;
3. the service is unreachable or sends an invalid document: the last good service document,
   from the store (``store``: the newest version any process applied from the service, which
   is what the service keeps in force) or else the disk cache (``cache``);
4. none of them: the file's limits, every one UNKNOWN (fail closed). Never the file's levels in
   silence: the file may be looser than what the desk agreed.

A Dagster run asks :meth:`LimitConfigProvider.current` once. The service calls
:meth:`LimitConfigProvider.start`: the same answer, then the provider's refresh loop long-polls
the service through the same source and applies every new document (a failed poll changes
nothing: the last good document stays in force).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from risk_monitor.adapters.config_service import (
    CONFIG_SERVICE_UP,
    NO_SERVICE_DOCUMENT,
    SERVICE_SOURCES,
    SOURCE_SERVICE,
    SOURCE_STORE,
    AppliedConfig,
    ConfigDocument,
    ConfigState,
    document_version,
    load_limits_file,
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


@dataclass
class ServiceContact:
    """Whether the configuration service answers the refresh loop, for /readyz."""

    connected: bool = False
    last_error: str | None = None
    last_contact: datetime | None = None
    failures: int = 0


@dataclass(frozen=True)
class LimitDocument:
    """The limit configuration in force and where it came from."""

    config: LimitConfig
    source: str  # config_service.SOURCE_*


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
        self.contact = ServiceContact()
        self._task: asyncio.Task[None] | None = None
        self.state.on_applied(self._record)

    def current(self) -> LimitDocument:
        """Fetch (or fall back, see the module docstring), apply, return what is in force."""
        if self.source is None:
            self.state.apply(self.base())
        elif not self._apply_fetched(self.source):
            for known in (self._stored, self.state.read_cache):
                doc = known()
                if doc is not None and self.state.apply(doc):
                    break
            else:
                log.error("no_limit_document_known_failing_closed", reason=NO_SERVICE_DOCUMENT)
                self.state.apply(self.base())
        applied = self.state.current
        if applied is None:  # only an unreadable or invalid limits file gets here
            raise ConfigError(f"no valid limit document: {self.state.last_rejection}",
                              key="limits_file")
        return LimitDocument(applied.limits, applied.source)

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
            version, document = source.fetch(self.component)
        except RiskMonitorError as exc:
            self.last_fetch_error = exc.message
            log.warning("config_service_unusable_keeping_last_good", error_code=exc.code,
                        error=exc.message)
            return False
        self.last_fetch_error = None
        return self._apply_service(version, document)

    def _apply_service(self, version: str, document: Mapping[str, Any]) -> bool:
        return self.state.apply(ConfigDocument(component=self.component, version=version,
                                               document=document, source=SOURCE_SERVICE))

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

    # -- the service's refresh loop -------------------------------------------------------------
    async def start(self) -> None:
        """What is in force now (as a run would see it), then follow the service's news."""
        try:
            await asyncio.to_thread(self.current)
        except ConfigError as exc:  # start anyway, not ready: every limit stays UNKNOWN
            log.error("no_valid_limit_document_at_start", error=exc.message)
        if self.source is None:
            return
        self._contact(self.last_fetch_error)
        self._task = asyncio.create_task(self._refresh(self.source), name="limit-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self, source: ConfigSource) -> None:
        resilience = self.settings.resilience
        wait_s = self.settings.config_service.poll_timeout_s
        delay = resilience.backoff_initial_s
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                # ``after`` = newest version seen (applied or rejected): wait only for news
                doc = await source.poll(self.component, after=self.state.last_seen_version,
                                        wait_s=wait_s)
            except RiskMonitorError as exc:
                self._contact(str(exc), reached=not _unreachable(exc))
                record_error(exc)
                log.warning("config_watch_failed", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, resilience.backoff_max_s)
                continue
            self._contact(None)
            delay = resilience.backoff_initial_s
            if doc is not None:
                await asyncio.to_thread(self._apply_service, *doc)
            elif loop.time() - started < wait_s / 2:
                # the server did not hold the poll (e.g. nothing published yet): do not spin
                await asyncio.sleep(min(wait_s, 5.0))

    def _contact(self, error: str | None, *, reached: bool = False) -> None:
        contact = self.contact
        contact.connected = error is None or reached
        CONFIG_SERVICE_UP.labels(component=self.component).set(int(contact.connected))
        if error is None:
            contact.last_contact, contact.last_error = datetime.now(UTC), None
        else:
            contact.failures += 1
            contact.last_error = error

    def readiness(self) -> dict[str, Any]:
        contact = self.contact
        return {**self.state.status(),
                "enabled": self.settings.config_service.enabled,
                "service_connected": contact.connected,
                "service_last_error": contact.last_error,
                "service_last_contact": (contact.last_contact.isoformat()
                                         if contact.last_contact else None)}


def _unreachable(exc: RiskMonitorError) -> bool:
    """No answer, or a server error: the service is down (an invalid document is an answer)."""
    return isinstance(exc, ServiceError) and exc.details.get("http_status", 599) >= 500
