"""Risk Monitor's writes to and reads from Dagster's catalog outside a run.

Reports hot-path evaluations into Dagster's catalog as runless asset materialisations, and
reads the audit-chain anchors Dagster runs recorded. (Not in ``adapters/``: the layering rule
keeps Dagster out of the adapters and the service; this module is their one bridge.)

The hot path answers in milliseconds, far below a Dagster run's seconds, so it does not run
inside Dagster; it records each alerting evaluation on the external asset ``live_limit_status``
instead (``DagsterInstance.report_runless_asset_event``, ≈ 10 ms, visible to other processes
within ≈ 50 ms). The event carries the inputs' data versions as metadata and a data version of
its own (a hash of them), so the UI shows what the alert was computed from. Without a Dagster
instance (no ``DAGSTER_HOME``) there is nothing to report to and the audit log alone keeps the
lineage.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from risk_monitor.adapters.audit_anchors import ANCHOR_ASSET, HEAD_HASH_KEY, HEAD_ID_KEY
from risk_monitor.adapters.sql.audit_verify import Anchor
from risk_monitor.platform.logging import get_logger

log = get_logger(__name__)

LIVE_ASSET = "live_limit_status"
LIVE_ASSET_INPUTS = ("market_prices", "exchange_positions", "exchange_balances",
                     "custodian_balances", "limit_config")
#: tag naming the evaluation (the alert context's ``evaluation_id``, sealed in the audit log)
EVALUATION_TAG = "risk_monitor/evaluation_id"
#: how many of the newest events are searched for the one just reported
FIND_RECENT = 20


@dataclass(frozen=True)
class ReportedEvent:
    """One ``live_limit_status`` materialisation in the event log, and its page in the UI."""

    storage_id: int
    timestamp: float  # unix seconds, as stored
    data_version: str
    url: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def evaluation_version(input_versions: Mapping[str, Mapping[str, Any]]) -> str:
    """The evaluation's own data version: a hash of its inputs' data versions."""
    text = json.dumps({k: v.get("data_version") for k, v in input_versions.items()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def asset_url(ui_url: str) -> str:
    """The asset's events page (the newest event selected)."""
    return f"{ui_url.rstrip('/')}/assets/{LIVE_ASSET}?view=events"


def event_url(ui_url: str, timestamp: float) -> str:
    """One event on the asset's events page: the UI selects the event whose timestamp (in
    milliseconds, as its GraphQL API gives it) is the ``time`` parameter."""
    return f"{asset_url(ui_url)}&time={int(timestamp * 1000)}"


def event_metadata(context: Mapping[str, Any],
                   correlation_ids: Sequence[str]) -> dict[str, Any]:
    """What a reviewer reads on the event: who evaluated, which alerts, each input's data
    version (``input/<name>``) and as-of time, and each venue's version of the inputs hashed
    per venue (``input/<name>/<venue>``)."""
    inputs: Mapping[str, Mapping[str, Any]] = context.get("input_data_versions") or {}
    metadata: dict[str, Any] = {
        "evaluated_at": str(context.get("evaluated_at")),
        "instance_id": str(context.get("instance_id")),
        "trigger": str(context.get("trigger")),
        "correlation_ids": ", ".join(correlation_ids),
        "limit_config_version": str(context.get("limit_config_version")),
        "code_version": str(context.get("code_version")),
        "evaluation_id": str(context.get("evaluation_id")),
    }
    for name, seen in inputs.items():
        metadata[f"input/{name}"] = str(seen.get("data_version"))  # short: the UI's key column
        if seen.get("as_of"):
            metadata[f"input/{name}/as_of"] = str(seen.get("as_of"))
        for venue, part in sorted((seen.get("venues") or {}).items()):
            metadata[f"input/{name}/{venue}"] = str(part.get("data_version"))
    return metadata


def find_event(instance: Any, evaluation_id: str, *, limit: int = FIND_RECENT,
               ui_url: str | None = None) -> ReportedEvent | None:
    """The ``live_limit_status`` event of one evaluation, among the newest ``limit``."""
    import dagster as dg

    result = instance.fetch_materializations(dg.AssetKey(LIVE_ASSET), limit=limit)
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        tags = materialization.tags or {}
        if tags.get(EVALUATION_TAG) == evaluation_id:
            return ReportedEvent(
                storage_id=int(record.storage_id), timestamp=float(record.timestamp),
                data_version=str(tags.get("dagster/data_version")),
                url=event_url(ui_url, record.timestamp) if ui_url else "",
                metadata={k: str(v.value) for k, v in materialization.metadata.items()})
    return None


class DagsterCatalog:
    """Reports to one Dagster instance: given, or opened from DAGSTER_HOME on first report
    (importing Dagster costs ≈ 1 s: the service does not pay it at start)."""

    def __init__(self, instance: Any | None, ui_url: str) -> None:
        self._instance = instance
        self._lock = threading.Lock()
        self.ui_url = ui_url

    @property
    def instance(self) -> Any:
        with self._lock:
            if self._instance is None:
                import dagster as dg

                self._instance = dg.DagsterInstance.get()
            return self._instance

    def warm_up(self) -> threading.Thread:
        """Import Dagster and open the instance in the background (service start), so the
        first alert's event is not late by the import (≈ 1 s, more on a busy machine)."""
        def run() -> None:
            try:
                self.instance  # noqa: B018 - opening it is the point
            except Exception as exc:  # reported again (and counted) at the first report
                log.warning("dagster_catalog_warm_up_failed", error=str(exc),
                            error_class=type(exc).__name__)

        thread = threading.Thread(target=run, name="dagster-catalog-warm-up", daemon=True)
        thread.start()
        return thread

    @classmethod
    def from_environment(cls, ui_url: str) -> DagsterCatalog | None:
        if not os.environ.get("DAGSTER_HOME"):
            log.warning("dagster_catalog_disabled", reason="DAGSTER_HOME is not set",
                        note="hot-path lineage stays in the audit log only")
            return None
        return cls(None, ui_url)

    def report_evaluation(self, context: Mapping[str, Any],
                          correlation_ids: Sequence[str]) -> ReportedEvent:
        """One materialisation of ``live_limit_status``; returns it with its UI link (the
        asset's events page when the event is not among the newest: many reporters)."""
        import dagster as dg

        inputs: Mapping[str, Mapping[str, Any]] = context.get("input_data_versions") or {}
        version = evaluation_version(inputs)
        evaluation_id = str(context.get("evaluation_id") or version)
        tags = {"dagster/data_version": version, EVALUATION_TAG: evaluation_id}
        for name, seen in inputs.items():
            tags[f"dagster/input_data_version/{name}"] = str(seen.get("data_version"))
        self.instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=LIVE_ASSET, metadata=event_metadata(context, correlation_ids),
            tags=tags))
        found = find_event(self.instance, evaluation_id, ui_url=self.ui_url)
        if found is not None:
            return found
        log.warning("dagster_event_not_found_after_report", evaluation_id=evaluation_id)
        return ReportedEvent(storage_id=0, timestamp=0.0, data_version=version,
                             url=asset_url(self.ui_url))


def read_dagster_anchors(instance: Any, *, limit: int = 10_000) -> list[Anchor]:
    """Heads recorded as metadata of ``compliance_status`` materialisations (newest first)."""
    import dagster as dg

    result = instance.fetch_materializations(dg.AssetKey(ANCHOR_ASSET), limit=limit)
    anchors: list[Anchor] = []
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        metadata = materialization.metadata
        head_id, head_hash = metadata.get(HEAD_ID_KEY), metadata.get(HEAD_HASH_KEY)
        if head_id is None or head_hash is None:
            continue
        anchors.append(Anchor(
            head_id=int(head_id.value), head_hash=str(head_hash.value),
            source=f"Dagster run {record.run_id or '(runless)'}",
            at=datetime.fromtimestamp(record.timestamp, UTC)))
    return anchors
