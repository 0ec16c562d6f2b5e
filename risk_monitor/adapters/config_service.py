"""Configuration-service client: fetch, validate, apply atomically, watch, cache to disk.

The service (contract: docs/config-service-contract.md) serves one versioned JSON document per
component; ``risk-monitor``'s holds ``limits`` (limits.yaml's shape) and optionally
``alert_routing`` and ``venues``. :class:`ConfigState` swaps a validated document in as one
immutable object, so readers never see half a configuration, and keeps the last good one when
a document is invalid. Which document is in force (and the long poll) is ``limit_provider.py``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prometheus_client import Counter, Gauge, Info

from risk_monitor.adapters.plain_json import check_plain_json
from risk_monitor.domain.limits import LimitConfig, load_limit_config
from risk_monitor.platform.errors import (
    ConfigError,
    DiscoveryError,
    RiskMonitorError,
    ServiceError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import ConfigServiceSettings

if TYPE_CHECKING:  # httpx and redis load only where a configuration service is used
    import httpx

    from risk_monitor.adapters.redis_registry import DiscoveryClient

log = get_logger(__name__)

CONFIG_VERSION_INFO = Info(
    "risk_monitor_config_version",
    "Configuration applied per component: document version, its source and the limits version.",
    ["component"],
)
CONFIG_APPLIED = Counter(
    "risk_monitor_config_applied_total", "Configuration versions applied.",
    ["component", "source"],
)
CONFIG_REJECTED = Counter(
    "risk_monitor_config_rejected_total",
    "Configuration documents rejected (the last good one stayed in force).",
    ["component", "reason"],
)
CONFIG_SERVICE_UP = Gauge(
    "risk_monitor_config_service_up",
    "1 when the last request to the configuration service succeeded.", ["component"],
)

#: where a document came from: the one vocabulary of the service, the Dagster runs and the store
SOURCE_FILE = "file"  # the limits file (packaged or ``limits_file``)
SOURCE_SERVICE = "service"  # fetched from the configuration service now
SOURCE_CACHE = "cache"  # the last good service document, from the disk cache
SOURCE_STORE = "store"  # the last good service document, from limit_config_versions
#: sources whose document the configuration service published (the file is not one of them)
SERVICE_SOURCES = frozenset({SOURCE_SERVICE, SOURCE_CACHE, SOURCE_STORE})


NO_SERVICE_DOCUMENT = ("configuration service enabled but no document of it is known (service "
                       "down, nothing cached or stored): the limits in force are unknown")


def document_version(document: Mapping[str, Any]) -> str:
    """Content version of a document: sha256 of its canonical JSON, first 16 hex digits."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


MAX_VERSION_LENGTH = 128
#: far above any real document; a bigger body is refused before it is parsed
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ConfigDocument:
    """One version of a component's document, as fetched (not yet validated)."""

    component: str
    version: str
    document: Mapping[str, Any]
    source: str  # SOURCE_* above
    #: set when this document must not be trusted (the service is enabled but no document of
    #: it is known): every limit then evaluates UNKNOWN with this reason (fail closed)
    unavailable: str = ""

    @classmethod
    def from_response(cls, body: Mapping[str, Any], *, source: str = SOURCE_SERVICE,
                      expected_component: str | None = None) -> ConfigDocument:
        """Parse a ``GET /v1/config/{component}`` body; ConfigError when it is malformed.

        Any input ends as a ConfigDocument or a ConfigError: the body is checked to be plain,
        finite, bounded JSON before anything reads it (a fuzz suite holds us to it).
        """
        if not isinstance(body, Mapping):
            raise ConfigError("configuration response is not a JSON object", source="config")
        document = body.get("document")
        version = body.get("version")
        component = body.get("component")
        if not isinstance(document, Mapping) or not isinstance(version, str) or not version:
            raise ConfigError("configuration response lacks 'document' or 'version'",
                              source="config", key="document")
        if len(version) > MAX_VERSION_LENGTH or not version.isprintable():
            raise ConfigError(f"configuration version must be at most {MAX_VERSION_LENGTH} "
                              "printable characters", source="config", key="version")
        if not isinstance(component, str) or (expected_component is not None
                                              and component != expected_component):
            shown = component[:MAX_VERSION_LENGTH] if isinstance(component, str) \
                else type(component).__name__
            raise ConfigError(f"configuration response is for {shown!r}, "
                              f"not {expected_component!r}", source="config", key="component")
        check_plain_json(document, "document")  # ``revision``, ``updated_at``: display only
        return cls(component=component, version=version, document=document, source=source)


@dataclass(frozen=True)
class AppliedConfig:
    """A validated configuration in force. Immutable: replaced as a whole on every change."""

    component: str
    version: str  # document version (configuration service) or file content hash
    source: str
    document: Mapping[str, Any]
    limits: LimitConfig  # the domain's validated limit configuration
    limits_version: str
    applied_at: datetime


def validate_document(document: Mapping[str, Any]) -> LimitConfig:
    """Check a ``risk-monitor`` document; returns its validated limits or raises ConfigError.

    ``alert_routing`` and ``venues`` are accepted and checked (docs/config-service-contract.md)
    but no component reads them yet."""
    if not isinstance(document, Mapping):
        raise ConfigError("configuration document must be a JSON object", key="document")
    unknown = sorted(str(k)[:64] for k in set(document) - {"limits", "alert_routing", "venues"})
    if unknown:
        raise ConfigError(f"unknown configuration keys: {unknown}", key=unknown[0])
    if "limits" not in document:
        raise ConfigError("configuration document has no 'limits'", key="limits")
    if not isinstance(document["limits"], Mapping):
        raise ConfigError("'limits' must be a mapping (the limit configuration document)",
                          key="limits")
    try:
        limits = load_limit_config(document["limits"])
    except ConfigError as exc:
        raise ConfigError(exc.message, key=f"limits.{exc.key}" if exc.key else "limits",
                          source="config") from None
    routing = document.get("alert_routing")
    if routing is not None and not isinstance(routing, Mapping):
        raise ConfigError("'alert_routing' must be a mapping", key="alert_routing")
    venues = document.get("venues")
    if venues is not None and (not isinstance(venues, list)
                               or not all(isinstance(v, Mapping) for v in venues)):
        raise ConfigError("'venues' must be a list of mappings", key="venues")
    return limits


def load_limits_file(path: Path, component: str) -> ConfigDocument:
    """The local limits file as a base document (source ``file``)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read limits file {str(path)!r}: {exc}",
                          key="limits_file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"limits file {str(path)!r} is not valid YAML: "
                          + str(exc).replace("\n", " "), key="(document)") from None
    document = {"limits": raw}
    try:
        version = document_version(document)
    except ValueError:  # .nan / .inf in the YAML: the canonical JSON refuses them
        raise ConfigError(f"limits file {str(path)!r} holds a non-finite number",
                          key="limits_file") from None
    return ConfigDocument(component=component, version=version, document=document,
                          source=SOURCE_FILE)


class ConfigState:
    """The configuration in force and its history of outcomes (thread-safe)."""

    def __init__(self, component: str, *, cache_path: Path | None = None) -> None:
        self.component = component
        self.cache_path = cache_path
        self.current: AppliedConfig | None = None  # swapped whole under the lock, read freely
        self._lock = threading.Lock()
        self._listeners: list[Callable[[AppliedConfig], None]] = []
        self.rejected: int = 0
        self.last_rejection: str | None = None
        self.last_seen_version: str | None = None  # newest version fetched, valid or not
        self.service_synced = False  # a service (or cached service) document is in force

    def on_applied(self, listener: Callable[[AppliedConfig], None]) -> None:
        """Call ``listener(applied)`` after every successful apply (and now, if applied)."""
        with self._lock:
            self._listeners.append(listener)
            current = self.current
        if current is not None:
            self._notify([listener], current)

    def apply(self, doc: ConfigDocument) -> bool:
        """Validate and swap in ``doc``; False (and the old one kept) when it is invalid."""
        self.last_seen_version = doc.version
        current = self.current
        if current is not None and current.version == doc.version \
                and current.source == doc.source and not current.limits.unavailable:
            return True  # same content from the same source already in force
        try:
            limits = validate_document(doc.document)
        except RiskMonitorError as exc:
            self._reject(doc, exc)
            return False
        except Exception as exc:  # a validator bug must not take the last good config away
            self._reject(doc, ConfigError(f"validation failed: {exc}", key="document"))
            return False
        if doc.unavailable:
            limits = limits.fail_closed(doc.unavailable)
        applied = AppliedConfig(
            component=self.component, version=doc.version, source=doc.source,
            document=doc.document, limits=limits, limits_version=limits.version,
            applied_at=datetime.now(UTC),
        )
        with self._lock:
            previous = self.current
            self.current = applied
            listeners = list(self._listeners)
            if doc.source in SERVICE_SOURCES:
                self.service_synced = True
        CONFIG_APPLIED.labels(component=self.component, source=doc.source).inc()
        CONFIG_VERSION_INFO.labels(component=self.component).info(
            {"version": applied.version, "source": applied.source,
             "limits_version": applied.limits_version})
        log.info("config_applied", component=self.component, version=applied.version,
                 source=applied.source, limits_version=applied.limits_version,
                 previous_version=previous.version if previous else None)
        if doc.source == SOURCE_SERVICE:
            self._write_cache(doc)
        self._notify(listeners, applied)
        return True

    def _reject(self, doc: ConfigDocument, exc: RiskMonitorError) -> None:
        self.rejected += 1
        self.last_rejection = f"{doc.version}: {exc.message}"
        key = getattr(exc, "key", None)
        CONFIG_REJECTED.labels(component=self.component, reason=exc.code).inc()
        record_error(exc)
        log.error("config_rejected", component=self.component, version=doc.version,
                  source=doc.source, error=exc.message, key=key,
                  kept_version=self.current.version if self.current else None)

    def _notify(self, listeners: list[Callable[[AppliedConfig], None]],
                applied: AppliedConfig) -> None:
        for listener in listeners:
            try:
                listener(applied)
            except Exception as exc:  # a recorder failing must not undo the apply
                error = exc if isinstance(exc, RiskMonitorError) else ServiceError(
                    f"config listener failed: {type(exc).__name__}: {exc}", source="config")
                record_error(error)
                log.error("config_listener_failed", component=self.component,
                          version=applied.version, error=str(error))

    # -- disk cache -----------------------------------------------------------------------------
    def _write_cache(self, doc: ConfigDocument) -> None:
        if self.cache_path is None:
            return
        payload = {"component": doc.component, "version": doc.version,
                   "document": doc.document, "cached_at": datetime.now(UTC).isoformat()}
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(payload, sort_keys=True))
            os.replace(tmp, self.cache_path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            log.warning("config_cache_write_failed", path=str(self.cache_path), error=str(exc))

    def read_cache(self) -> ConfigDocument | None:
        """The last good service document saved on disk, if any and readable."""
        if self.cache_path is None or not self.cache_path.is_file():
            return None
        try:
            body = json.loads(self.cache_path.read_text())
            doc = ConfigDocument.from_response(body, source=SOURCE_CACHE,
                                               expected_component=self.component)
        except (OSError, ValueError, RiskMonitorError) as exc:
            log.warning("config_cache_unreadable", path=str(self.cache_path), error=str(exc))
            return None
        if document_version(doc.document) != doc.version:
            log.warning("config_cache_corrupt", path=str(self.cache_path))
            return None
        return doc

    def status(self) -> dict[str, Any]:
        """What /readyz and GetRiskStatus show."""
        current = self.current
        return {
            "applied": current is not None,
            "version": current.version if current else None,
            "source": current.source if current else None,
            "limits_version": current.limits_version if current else None,
            "applied_at": current.applied_at.isoformat() if current else None,
            "service_synced": self.service_synced,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
        }


class ConfigServiceLocator:
    """Base URL of the configuration service: fixed, or discovered in Redis."""

    def __init__(self, settings: ConfigServiceSettings,
                 discovery: DiscoveryClient | None = None) -> None:
        self.settings = settings
        self.discovery = discovery
        self._current: str | None = settings.url.rstrip("/") if settings.url else None

    def url(self) -> str:
        if self._current is not None:  # a fixed url is never forgotten (``failed``)
            return self._current
        if self.discovery is None:
            raise DiscoveryError("configuration service has no url and no Redis discovery "
                                 "(set config_service.url or redis_url)", source="config")
        instance = self.discovery.pick(self.settings.service_name, need="rest_url")
        self._current = instance.rest_url.rstrip("/")
        log.info("config_service_discovered", url=self._current, instance_id=instance.instance_id)
        return self._current

    def failed(self) -> None:
        """Forget a discovered instance after a transport failure (the next call re-discovers)."""
        if self.settings.url:
            return
        self._current = None
        if self.discovery is not None:
            self.discovery.invalidate(self.settings.service_name)


def parse_response(response: httpx.Response, component: str, url: str) -> ConfigDocument | None:
    """None for 304 or 404 (nothing new, nothing published); ConfigDocument for 200;
    ServiceError otherwise."""
    if response.status_code in (304, 404):
        return None
    if response.status_code == 200:
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ConfigError(f"configuration response is larger than {MAX_RESPONSE_BYTES} "
                              "bytes", source="config", key="document")
        try:
            body = response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise ConfigError(f"configuration service sent invalid JSON: "
                              f"{type(exc).__name__}", source="config", key="document") from None
        return ConfigDocument.from_response(body, expected_component=component)
    raise ServiceError(
        f"configuration service answered HTTP {response.status_code}",
        source="config", retryable=response.status_code >= 500 or response.status_code == 429,
        details={"endpoint": url, "http_status": response.status_code},
    )


class HttpConfigSource:
    """``ports.ConfigSource`` over the configuration service: the one HTTP client of it, for a
    run's single fetch and for the service's long poll (``poll``)."""

    def __init__(self, locator: ConfigServiceLocator, *, timeout_s: float = 10.0) -> None:
        self.locator = locator
        self.timeout_s = timeout_s

    def fetch(self, component: str) -> tuple[str, Mapping[str, Any]]:
        """(version, document) now; ConfigError when nothing is published for ``component``."""
        import httpx

        url = f"{self.locator.url()}/v1/config/{component}"
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, url) from exc
        doc = self._parse(response, component, url)
        if doc is None:
            raise ConfigError(f"configuration service has no document for {component!r}",
                              source="config", key="component")
        return doc.version, doc.document

    async def poll(self, component: str, *, after: str | None,
                   wait_s: float) -> tuple[str, Mapping[str, Any]] | None:
        """The first version other than ``after`` published within ``wait_s`` (long poll);
        None when none was, or nothing is published for ``component`` yet."""
        import httpx

        url = f"{await asyncio.to_thread(self.locator.url)}/v1/config/{component}"
        params = {"wait_s": f"{wait_s:g}", **({"after": after} if after else {})}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s + wait_s) as client:
                response = await client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, url) from exc
        doc = self._parse(response, component, url)
        return None if doc is None else (doc.version, doc.document)

    def _unreachable(self, exc: httpx.HTTPError, url: str) -> ServiceError:
        self.locator.failed()
        return ServiceError(f"configuration service unreachable: {type(exc).__name__}: {exc}",
                            source="config", retryable=True, details={"endpoint": url})

    def _parse(self, response: httpx.Response, component: str,
               url: str) -> ConfigDocument | None:
        try:
            return parse_response(response, component, url)
        except ServiceError as exc:
            if exc.retryable:
                self.locator.failed()
            raise
