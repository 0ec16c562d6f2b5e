"""The limit document in force, for a Dagster run: the same rule the service's watcher follows.

Sources, in order, in the one vocabulary of ``config_service.SOURCE_*``:

1. configuration service disabled: the limits file (``file``);
2. enabled: the service's document (``service``), recorded in ``limit_config_versions``;
3. the service is unreachable or sends an invalid document: the last good service document,
   from the store (``store``: the newest version any process applied from the service, which
   is what the service keeps in force) or else the disk cache (``cache``);
4. none of them: the file's limits, every one UNKNOWN (fail closed). Never the file's levels in
   silence: the file may be looser than what the desk agreed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from risk_monitor.adapters.config_service import (
    NO_SERVICE_DOCUMENT,
    SERVICE_SOURCES,
    SOURCE_FILE,
    SOURCE_SERVICE,
    SOURCE_STORE,
    AppliedConfig,
    ConfigDocument,
    ConfigState,
    document_version,
    load_limits_file,
    validate_document,
)
from risk_monitor.adapters.sql.config_versions import ConfigVersionStore
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
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


def last_good_document(versions: ConfigVersionStore, component: str) -> ConfigDocument | None:
    """The newest service document any process applied, from the store (``store``)."""
    for known in versions.history(limit=50):
        if known.source in SERVICE_SOURCES:
            document = {"limits": known.document}
            return ConfigDocument(component=component, version=document_version(document),
                                  document=document, source=SOURCE_STORE)
    return None


def record_applied(versions: ConfigVersionStore, applied: AppliedConfig) -> None:
    """Record a configuration the service applied, in the vocabulary the runs read back; a
    document that is not trusted is never recorded (it must not become a "last good")."""
    if applied.limits.unavailable:
        return
    versions.record(applied.limits_version, dict(applied.document.get("limits", {})),
                    source=applied.source, applied_at=applied.applied_at)


class LimitConfigProvider:
    """Answers "which limits are in force" for one run (module docstring)."""

    def __init__(self, settings: Settings, versions: ConfigVersionStore,
                 source: ConfigSource | None) -> None:
        self.settings = settings
        self.versions = versions
        self.source = source
        self.component = settings.config_service.component

    def current(self) -> LimitDocument:
        if self.source is None:
            return self._use(load_limits_file(self.settings.effective_limits_file,
                                              self.component))
        try:
            _version, document = self.source.fetch(self.component)
            return self._use(ConfigDocument(component=self.component,
                                            version=document_version(document),
                                            document=document, source=SOURCE_SERVICE))
        except RiskMonitorError as exc:
            log.warning("config_service_unusable_keeping_last_good", error_code=exc.code,
                        error=exc.message)
        cache = ConfigState(self.component, cache_path=self.settings.config_service.cache_path)
        known = last_good_document(self.versions, self.component) or cache.read_cache()
        if known is not None:
            return self._use(known)
        log.error("no_limit_document_known_failing_closed", reason=NO_SERVICE_DOCUMENT)
        fallback = load_limits_file(self.settings.effective_limits_file, self.component)
        config: LimitConfig = validate_document(fallback.document)["limits"]
        return LimitDocument(config.fail_closed(NO_SERVICE_DOCUMENT), SOURCE_FILE,
                             dict(fallback.document["limits"]))

    def _use(self, doc: ConfigDocument) -> LimitDocument:
        config: LimitConfig = validate_document(doc.document)["limits"]
        limits = dict(doc.document["limits"])
        self.versions.record(config.version, limits, source=doc.source,
                             applied_at=datetime.now(UTC))
        return LimitDocument(config, doc.source, limits)
