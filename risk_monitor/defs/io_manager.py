"""The IO manager of every asset: step outputs live in the risk store, never on local disk.

Dagster's default IO manager pickles outputs under the local ``$DAGSTER_HOME/storage``. That
works while every run and step shares one disk, and breaks on the Kubernetes run launcher
(every run a fresh pod) and on the Celery executor with workers on other machines: a run of
``risk_evaluation`` would look for yesterday's ``market_prices`` on a disk it does not have.
This one keeps the values in the risk store's database (``database_url``: PostgreSQL in
production, the embedded SQLite file by default), which every run already reaches.

Loading an input picks the value of the run that produced it: the same run for a step of this
run, otherwise the run of the asset's latest materialisation in the instance's event log, so
the value loaded is the one whose data version the catalog shows. Nothing stored is an error
(MissingDataError), never an empty default: risk must not read absence as zero.
"""

import contextlib
from collections.abc import Iterator

import dagster as dg
from pydantic import PrivateAttr

from risk_monitor.adapters.sql.asset_values import AssetValueStore
from risk_monitor.bootstrap import Runtime, build_runtime
from risk_monitor.defs.failures import surfaced_errors
from risk_monitor.platform.errors import MissingDataError

SOURCE = "io_manager"


def value_key(context: dg.OutputContext | dg.InputContext) -> str:
    """The asset key as a string (``a/b``), or ``step.output`` for a plain op output."""
    if context.has_asset_key:
        return context.asset_key.to_user_string()
    upstream = context if isinstance(context, dg.OutputContext) else context.upstream_output
    if upstream is None:
        raise MissingDataError(f"input {context.name!r} has no upstream output to load",
                               source=SOURCE)
    return f"{upstream.step_key}.{upstream.name}"


class RiskStoreIOManager(dg.ConfigurableIOManager):
    """Pickled step outputs in the risk store's database, keyed by (asset, run)."""

    config_file: str | None = None
    keep_per_asset: int = 20
    _runtime: Runtime | None = PrivateAttr(default=None)

    def _values(self) -> AssetValueStore:
        if self._runtime is None:
            self._runtime = build_runtime(config_file=self.config_file)
        return AssetValueStore(self._runtime.storage.engine, keep=self.keep_per_asset)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None and context.dagster_type.is_nothing:
            return
        with surfaced_errors(SOURCE):
            stored = self._values().put(value_key(context), context.run_id, obj)
        context.add_output_metadata({"stored_bytes": stored.size_bytes,
                                     "stored_in": "risk store"})

    def load_input(self, context: dg.InputContext) -> object:
        with surfaced_errors(SOURCE):
            values = self._values()
            key = value_key(context)
            for run_id in self._candidate_runs(context):
                found = values.get(key, run_id)
                if found is not None:
                    return found[0]
            raise MissingDataError(
                f"no stored value of {key!r}: materialise it first (e.g. run risk_cycle)",
                source=SOURCE, details={"asset": key})

    @staticmethod
    def _candidate_runs(context: dg.InputContext) -> Iterator[str]:
        """This run's own output first, then the run of the latest materialisation (asked of
        the event log only when this run has no value: one query less per input of a step
        whose upstream ran in the same run)."""
        own: str | None = None
        upstream = context.upstream_output
        if upstream is not None:
            # an artificial context (asset from another run) may carry no run id
            with contextlib.suppress(dg.DagsterInvariantViolationError):
                own = upstream.run_id
        if own is not None:
            yield own
        if context.has_asset_key:
            event = context.instance.get_latest_materialization_event(context.asset_key)
            if event is not None and event.run_id != own:
                yield event.run_id


@dg.definitions
def io_managers() -> dg.Definitions:
    return dg.Definitions(resources={"io_manager": RiskStoreIOManager()})
