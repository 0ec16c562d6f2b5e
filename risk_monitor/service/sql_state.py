"""``RiskViewProvider`` over the shared database, with the process's own evaluation in front.

Both evaluators (the Dagster runs and the service's hot path) write the latest limit results,
risk metrics and source status to the database, and every alert goes through the outbox. So:

- limit results and the summary come from this process's own evaluation when it has one
  (``live``, an :class:`LiveEvaluation`), else from ``limit_status_latest``,
  ``risk_metrics_latest`` and ``source_status_latest`` (what the last Dagster run wrote);
- the alert feed is the outbox (one truth for alerts, whoever raised them): the cursor is the
  outbox row id, polled every ``poll_interval_s`` while a stream waits;
- ``check_order`` needs positions, which the database does not hold: it is answered by the live
  evaluation, and denied (fail closed) without one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.engine import read_only
from risk_monitor.adapters.sql.risk_state import LatestEvaluationStore
from risk_monitor.adapters.sql.schema import outbox
from risk_monitor.domain.figures import EQUITY_METRIC, GROSS_METRIC, NET_METRIC, finite
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult, SourceKind
from risk_monitor.domain.orders import OrderRequest
from risk_monitor.service.state import (
    AlertFeedItem,
    LiveEvaluation,
    OrderDecision,
    RiskView,
    compliance_of,
    deny,
    freshness_of,
)

DATABASE = "database"
SOURCE = "service_state"


class DatabaseRiskView:
    """See the module docstring."""

    def __init__(self, engine: Engine, *, live: LiveEvaluation | None = None,
                 max_age_s: float = 60.0, poll_interval_s: float = 0.5,
                 budgets: Mapping[SourceKind, float] | None = None) -> None:
        self.engine = engine
        self.store = LatestEvaluationStore(engine)
        self.live = live
        self.max_age_s = max_age_s
        self.budgets = dict(budgets or {})
        self.poll_interval_s = poll_interval_s

    def _live(self) -> LiveEvaluation | None:
        return self.live if self.live is not None and self.live.evaluated else None

    def set_limit_config(self, config: LimitConfig, version: str | None = None) -> None:
        if self.live is not None:
            self.live.set_limit_config(config, version)

    # -- RiskViewProvider ----------------------------------------------------------------------
    def risk_view(self, now: datetime) -> RiskView:
        live = self._live()
        if live is not None:
            return live.risk_view(now)
        results = self.store.limit_results()
        sources = tuple(freshness_of(s, now, self.max_age_s, self.budgets)
                        for s in self.store.sources())
        if not results:
            config = self.live.config if self.live is not None else None
            return RiskView.unknown(config.version if config else "", sources)
        status, counts = compliance_of(results)
        newest = max(results, key=lambda r: r.as_of)
        figures = {m.name: m.value for m in self.store.metrics() if not m.labels}
        return RiskView(
            status=status, as_of=newest.as_of, equity=finite(figures.get(EQUITY_METRIC)),
            gross_exposure=finite(figures.get(GROSS_METRIC)),
            net_exposure=finite(figures.get(NET_METRIC)), sources=sources,
            limit_config_version=newest.config_version, evaluation_source=DATABASE,
            counts=counts)

    def limit_results(self) -> list[LimitResult]:
        live = self._live()
        return live.limit_results() if live is not None else self.store.limit_results()

    def alert_head(self) -> int:
        with read_only(self.engine, source=SOURCE) as conn:
            head = conn.execute(sa.select(sa.func.max(outbox.c.id))).scalar()
        return int(head or 0)

    def alerts_after(self, cursor: int, limit: int) -> list[AlertFeedItem]:
        query = (sa.select(outbox.c.id, outbox.c.payload).where(outbox.c.id > cursor)
                 .order_by(outbox.c.id).limit(limit))
        with read_only(self.engine, source=SOURCE) as conn:
            return [AlertFeedItem(int(row.id), codec.notification_from_payload(row.payload))
                    for row in conn.execute(query)]

    async def wait_alerts(self, cursor: int, timeout_s: float) -> None:
        # NaN passes min/max untouched and became sleep(0): a busy poll of the database
        wait = timeout_s if math.isfinite(timeout_s) else self.poll_interval_s
        await asyncio.sleep(max(0.0, min(wait, self.poll_interval_s)))

    def check_order_now(self, order: OrderRequest, now: datetime) -> OrderDecision | None:
        """In memory either way (the live evaluation, or the fail-closed denial); None when the
        live evaluation needs a re-preparation first (``LiveEvaluation.check_order_now``)."""
        if self.live is not None:
            return self.live.check_order_now(order, now)
        return self.check_order(order, now)

    def check_order(self, order: OrderRequest, now: datetime) -> OrderDecision:
        if self.live is not None:
            return self.live.check_order(order, now)
        return deny("pre-trade check needs this process's own evaluation (positions are not "
                    "stored in the database): fail closed", now)
