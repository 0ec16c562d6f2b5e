"""Lineage of hot-path evaluations (use case): what the service records for each alert.

Two steps around the service's alert transaction (hooks in ``service/hot_path.py``):

* :meth:`HotPathLineage.context` adds the content-addressed data versions of the exact inputs
  evaluated (``domain.lineage.input_versions``, the function the Dagster assets hash with) to
  the alert context, so they are written with the alert, in its transaction, into the sealed
  audit entry;
* the same fields point the Slack message at that evaluation's event in Dagster (its "Asset"
  link and the inputs' versions), so the first post already carries the link and no
  ``chat.update`` is needed;
* :meth:`HotPathLineage.after_commit` reports the evaluation into Dagster's catalog as a
  runless materialisation of ``live_limit_status`` (adapters/dagster_catalog.py). A failure
  there is logged and counted, never allowed to delay or drop the alert: the audit entry
  already holds the lineage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from risk_monitor.dagster_catalog import (
    LIVE_ASSET,
    DagsterCatalog,
    evaluation_version,
    event_url,
)
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.lineage import VersionCache, input_versions
from risk_monitor.domain.model import Notification
from risk_monitor.platform.code_version import code_version
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings

log = get_logger(__name__)


class HotPathLineage:
    def __init__(self, catalog: DagsterCatalog | None) -> None:
        self.catalog = catalog
        self.reported = 0
        self.failed = 0
        self.last_event_url: str | None = None
        #: content versions by input object: an input kept between evaluations (positions
        #: between polls) is hashed once, not on every evaluation
        self._versions: VersionCache = VersionCache()

    @classmethod
    def from_settings(cls, settings: Settings) -> HotPathLineage:
        code_version()  # resolved now (git), not on the first alert's critical path
        return cls(DagsterCatalog.from_environment(settings.alerts.dagster_ui_url))

    def context(self, report: RiskReport) -> dict[str, Any]:
        """Alert-context fields naming the exact inputs of this evaluation, and, when a Dagster
        instance is configured, the ``live_limit_status`` event the alert will link to (the
        Slack message's "Asset" button and input versions come from these fields, so the link is
        in the first post: the event is reported right after the commit, before delivery)."""
        versions = input_versions(report.snapshot, report.config_version, cache=self._versions)
        fields: dict[str, Any] = {
            "input_data_versions": versions,
            "data_versions": {name: seen["data_version"] for name, seen in versions.items()},
        }
        if self.catalog is not None:
            fields["asset_key"] = LIVE_ASSET
            fields["dagster_event_url"] = event_url(self.catalog.ui_url,
                                                    evaluation_version(versions))
        return fields

    def after_commit(self, context: Mapping[str, Any],
                     notifications: Sequence[Notification]) -> str | None:
        """Report an alerting evaluation to Dagster; returns the event's UI link."""
        if self.catalog is None or not notifications:
            return None
        try:
            url = self.catalog.report_evaluation(
                context, sorted({n.correlation_id for n in notifications}))
        except Exception as exc:  # Dagster's storage down must not touch alerting
            self.failed += 1
            log.warning("dagster_catalog_report_failed", error=str(exc),
                        error_class=type(exc).__name__)
            return None
        self.reported += 1
        self.last_event_url = url
        return url
