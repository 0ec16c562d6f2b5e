"""Metadata and check helpers shared by the collection assets (market data, positions, balances).

Kept out of the asset modules so each asset body stays a few lines: adapter call, then
``collection_metadata`` for the UI. Nothing here reads a secret: sources carry only venue ids,
error codes, redacted messages and endpoint override URLs.
"""

from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from risk_monitor.adapters.collection import data_age_s
from risk_monitor.defs.metadata import md_table
from risk_monitor.domain.frame_rules import FrameRules
from risk_monitor.domain.lineage import content_version, venue_versions
from risk_monitor.domain.model import Collected, SourceStatus
from risk_monitor.domain.schemas import validate_frame
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.logging import redact_text

PREVIEW_ROWS = 20
GROUP = "collection"
#: a collection asset not materialised for this long is late (warn) / failing (fail)
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=10),
                                           warn_window=timedelta(minutes=3))


def data_version_of(collected: Collected) -> dg.DataVersion:
    """A content hash of the rows and of each source's coverage: the data version an alert's
    audit record names (the hot path hashes its inputs with the same function)."""
    return dg.DataVersion(content_version(collected))


def sources_table(sources: tuple[SourceStatus, ...]) -> dg.TableMetadataValue:
    schema = dg.TableSchema(columns=[
        dg.TableColumn("source", "string"), dg.TableColumn("ok", "bool"),
        dg.TableColumn("rows", "int"), dg.TableColumn("error_code", "string"),
        dg.TableColumn("error", "string"), dg.TableColumn("endpoint_override", "string"),
        dg.TableColumn("as_of", "string"),
    ])
    records = [dg.TableRecord({
        "source": s.key, "ok": s.ok, "rows": s.rows, "error_code": s.error_code or "",
        "error": redact_text(s.error or "")[:300], "endpoint_override": s.endpoint_override or "",
        "as_of": s.as_of.isoformat(),
    }) for s in sources]
    return dg.MetadataValue.table(records=records, schema=schema)


def collection_metadata(collected: Collected, *, now: datetime, age_column: str
                        ) -> dict[str, Any]:
    """Row count, sources ok / missing, data age, endpoint overrides, sources and a preview."""
    frame = collected.frame
    overrides = {s.venue: s.endpoint_override for s in collected.sources if s.endpoint_override}
    age = data_age_s(frame, now, age_column)
    return {
        "rows": dg.MetadataValue.int(len(frame)),
        "sources_ok": dg.MetadataValue.json(sorted(s.key for s in collected.sources if s.ok)),
        "sources_missing": dg.MetadataValue.json(
            {s.key: f"{s.error_code}: {redact_text(s.error or '')[:200]}"
             for s in collected.missing}),
        "complete": dg.MetadataValue.bool(collected.complete),
        "max_data_age_s": dg.MetadataValue.float(round(age, 3)) if age is not None
        else dg.MetadataValue.null(),
        "endpoint_overrides": dg.MetadataValue.json(overrides),
        "sources": sources_table(collected.sources),
        # each venue's part hashed alone (the data version hashes these): the hot path records
        # the same per-venue versions, so a reviewer sees which venue's data an alert used
        "data_versions_by_venue": dg.MetadataValue.json(
            {venue: seen.data_version for venue, seen in venue_versions(collected).items()}),
        "preview": dg.MetadataValue.md(md_table(frame, PREVIEW_ROWS, precise=True)),  # raw values
    }


def log_missing(context: dg.AssetExecutionContext, collected: Collected) -> None:
    for status in collected.missing:
        context.log.warning(f"source {status.key} missing: {status.error_code} "
                            f"{redact_text(status.error or '')[:300]}")


def collected_output(context: dg.AssetExecutionContext, collected: Collected, *,
                     now: datetime, age_column: str, **extra: Any) -> dg.Output[Collected]:
    """The asset's output: missing sources logged, a content data version, the metadata."""
    log_missing(context, collected)
    metadata = collection_metadata(collected, now=now, age_column=age_column)
    metadata.update(extra)
    return dg.Output(collected, data_version=data_version_of(collected), metadata=metadata)


# --- checks ------------------------------------------------------------------------------------
def schema_check(check_name: str, asset: str, collected: Collected,
                 rules: FrameRules) -> dg.AssetCheckResult:
    """Re-validate the stored frame against the schema (at check time, with the time rules),
    by the rule collection applies (``schemas.validate_frame``)."""
    try:
        validate_frame(collected.frame, rules, source=asset)
    except DataValidationError as exc:  # a StaleDataError too
        return dg.AssetCheckResult(
            check_name=check_name, asset_key=asset, passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failures": dg.MetadataValue.json(exc.details["failures"])},
            description="rows break the dataset schema")
    return dg.AssetCheckResult(check_name=check_name, asset_key=asset, passed=True,
                               metadata={"rows": len(collected.frame)})


def completeness_check(check_name: str, asset: str, collected: Collected,
                       expected: list[str]) -> dg.AssetCheckResult:
    """Every expected source answered and validated; names what is missing and why."""
    reported = {s.key for s in collected.sources}
    absent = [key for key in expected if key not in reported]
    missing = {s.key: f"{s.error_code}: {redact_text(s.error or '')[:200]}"
               for s in collected.missing}
    missing.update({key: "not collected" for key in absent})
    # nothing configured is nothing missing: a desk without a custodian has a complete
    # (empty) custodian collection, not a failing check on every run
    return dg.AssetCheckResult(
        check_name=check_name, asset_key=asset, passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"missing": dg.MetadataValue.json(missing),
                  "expected": dg.MetadataValue.json(expected)},
        description=None if not missing else
        f"{len(missing)} source(s) missing; their exposure is UNKNOWN, not zero")


def dataset_check_specs(dataset: str, asset: str, schema: str, complete: str
                        ) -> list[dg.AssetCheckSpec]:
    """The specs of :func:`dataset_checks` (their descriptions given). The schema check blocks:
    rows that break it must not reach risk. Completeness does not: a missing source is
    reported (ERROR) and risk still runs, turning its limits UNKNOWN instead of skipping them."""
    return [dg.AssetCheckSpec(f"{dataset}_match_schema", asset=asset, blocking=True,
                              description=schema),
            dg.AssetCheckSpec(f"{dataset}_are_complete", asset=asset, blocking=False,
                              description=complete)]


def dataset_checks(dataset: str, asset: str, collected: Collected, rules: FrameRules,
                   expected: list[str]) -> list[dg.AssetCheckResult]:
    """``<dataset>_match_schema`` (the rules collection applied, at check time) and
    ``<dataset>_are_complete``."""
    return [schema_check(f"{dataset}_match_schema", asset, collected, rules),
            completeness_check(f"{dataset}_are_complete", asset, collected, expected)]
