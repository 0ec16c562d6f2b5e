"""Sensors that request risk runs: on new market data, and on collections made elsewhere.

Dagster's daemon evaluates sensors at most every ~5 s here whatever ``minimum_interval_seconds``
says (FACTS.md); we ask for 1 s so the daemon's own loop is the only floor. A sensor never
requests a run while another risk run is still going: the next tick picks the data up, so
nothing piles up and nothing is lost (the cursor only moves when a run is requested).
"""

import json

import dagster as dg

from risk_monitor.defs.risk.automation import AUTOMATION
from risk_monitor.defs.risk.jobs import risk_cycle, risk_evaluation
from risk_monitor.platform.settings import load_settings

COLLECTION_ASSETS = ("market_prices", "exchange_positions", "exchange_balances",
                     "custodian_balances")
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _risk_run_in_flight(instance: dg.DagsterInstance) -> str | None:
    for job in (risk_cycle.name, risk_evaluation.name):
        runs = instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_FLIGHT), limit=1)
        if runs:
            return runs[0].run_id
    return None


@dg.sensor(job=risk_cycle, minimum_interval_seconds=1,
           default_status=AUTOMATION.sensor_status,
           description="New quotes in the Redis market-data streams → a risk cycle. "
                       f"At start: {AUTOMATION.reason}.")
def market_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    settings = load_settings()
    if not settings.redis_url:
        return dg.SkipReason("no Redis quote stream configured (market_data uses REST); "
                             "the schedule evaluates every minute")
    from risk_monitor.adapters.redis_quotes import latest_stream_ids

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    latest = latest_stream_ids(settings.redis_url, settings.market_data,
                               [v.id for v in settings.venues])
    changed = {v: i for v, i in latest.items() if seen.get(v) != i}
    if not changed:
        return dg.SkipReason("no new quotes since the last risk run")
    running = _risk_run_in_flight(context.instance)
    if running:
        return dg.SkipReason(f"risk run {running} still going; new quotes wait for the next tick")
    newest = max(changed.values(), key=lambda i: tuple(int(p) for p in i.split("-")))
    run_key = "md:" + ",".join(f"{v}={i}" for v, i in sorted(latest.items()))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={
            "risk_monitor/trigger": "market_data",
            "risk_monitor/source_event_ms": newest.split("-")[0],
        })],
        cursor=json.dumps({**seen, **latest}, sort_keys=True),
    )


@dg.multi_asset_sensor(
    monitored_assets=[dg.AssetKey(k) for k in COLLECTION_ASSETS], job=risk_evaluation,
    minimum_interval_seconds=1, default_status=AUTOMATION.sensor_status,
    description="Collections materialised outside a risk cycle (CLI, UI, backfill) → "
                f"re-evaluate limits on them. At start: {AUTOMATION.reason}.")
def collection_sensor(context: dg.MultiAssetSensorEvaluationContext
                      ) -> dg.RunRequest | dg.SkipReason:
    records = {k: r for k, r in context.latest_materialization_records_by_key().items() if r}
    if not records:
        return dg.SkipReason("no new collection materialisations")
    outside = {}
    for key, record in records.items():
        run = context.instance.get_run_by_id(record.run_id)
        if run is None or run.job_name != risk_cycle.name:
            outside[key] = record
    if not outside:
        context.advance_all_cursors()
        return dg.SkipReason("collections came from risk cycles, which evaluate themselves")
    running = _risk_run_in_flight(context.instance)
    if running:
        return dg.SkipReason(f"risk run {running} still going")
    context.advance_all_cursors()
    storage_ids = sorted(r.storage_id for r in outside.values())
    return dg.RunRequest(run_key=f"collection:{storage_ids[-1]}", tags={
        "risk_monitor/trigger": "collection",
        "risk_monitor/assets": ",".join(sorted(k.to_user_string() for k in outside)),
    })
