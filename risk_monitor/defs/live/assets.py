"""The service's hot-path evaluation on the asset graph: an external asset, reported by the
service (runless materialisations), so compliance sees hot-path alerts in the Dagster UI with
their input data versions, next to the assets the Dagster runs materialise."""

import dagster as dg

from risk_monitor.dagster_catalog import LIVE_ASSET, LIVE_ASSET_INPUTS
from risk_monitor.defs.metadata import OWNERS

live_limit_status = dg.AssetSpec(
    LIVE_ASSET,
    deps=list(LIVE_ASSET_INPUTS),
    group_name="risk",
    owners=OWNERS,
    kinds={"python"},
    description=(
        "Limit status as evaluated by the Risk Monitor service's hot path (not by a Dagster "
        "run). Each materialisation is one evaluation that changed an alert: metadata names "
        "the service instance, the correlation ids of the alerts, the data version and as-of "
        "time of every input, the limit configuration and code versions."),
)
