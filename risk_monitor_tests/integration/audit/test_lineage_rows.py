"""Hot-path alert entries seal the digest of their evaluation's input versions; the versions
are stored once per evaluation (``evaluation_lineage``) and `audit verify` catches an edited,
deleted or forged version row, on PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from risk_monitor import application
from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import audit_log, evaluation_lineage
from risk_monitor.audit_trace import trace
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.audit_chain import versions_digest
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor_tests.fixtures.storage import make_result
from risk_monitor_tests.integration.audit.test_audit_chain import T0, tampering
from risk_monitor_tests.integration.audit.test_hot_path_lineage import _snapshot


def _hot_path_alerts(storage: Storage) -> dict[str, Any]:
    """One evaluation's context, two alerts raised with it (two transactions), like the
    service's writer does: one version row, two entries naming it."""
    fields = HotPathLineage(None).context(
        SimpleNamespace(snapshot=_snapshot(), config_version="cfg-v1"))  # type: ignore[arg-type]
    context = {"source": "service", "instance_id": "svc-1", "limit_config_version": "cfg-v1",
               **fields}
    for minutes, scope in ((0, "portfolio"), (1, "venue:binance")):
        at = T0 + timedelta(minutes=minutes)
        application.raise_alerts(storage, [make_result("BREACH", at, scope=scope)], now=at,
                                 policy=AlertPolicy(), context=context)
    return context


def _rows(storage: Storage) -> list[dict[str, Any]]:
    with storage.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(evaluation_lineage))]


def _tampering_lineage(storage: Storage) -> Any:
    """Like ``tampering``, with evaluation_lineage's append-only trigger out of the way too."""
    class _Ctx:
        def __enter__(self) -> sa.Connection:
            self.inner = tampering(storage)
            conn = self.inner.__enter__()
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("ALTER TABLE evaluation_lineage DISABLE TRIGGER "
                                     "evaluation_lineage_append_only")
            else:
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS evaluation_lineage_no_update")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS evaluation_lineage_no_delete")
            self.conn = conn
            return conn

        def __exit__(self, *exc: object) -> None:
            if self.conn.dialect.name == "postgresql":
                self.conn.exec_driver_sql("ALTER TABLE evaluation_lineage ENABLE TRIGGER "
                                          "evaluation_lineage_append_only")
            self.inner.__exit__(*exc)
    return _Ctx()


def test_alert_entries_seal_the_digest_and_the_versions_are_stored_once(
        storage: Storage) -> None:
    context = _hot_path_alerts(storage)
    digest = str(context["lineage_digest"])
    versions = context["lineage_digest"].versions
    [row] = _rows(storage)
    assert row["digest"] == digest == versions_digest(versions)
    with storage.engine.connect() as conn:
        sealed = [dict(p) for p in conn.execute(
            sa.select(audit_log.c.payload).where(audit_log.c.event.like("alert.%"))).scalars()]
    assert len(sealed) == 2
    for payload in sealed:  # the entry seals 64 characters, not the versions
        assert payload["lineage_digest"] == digest
        assert "input_data_versions" not in payload
    # readers see the versions the digest names: the trace lists every input's version
    for record in storage.audit.recent(event="alert.firing"):
        assert record.payload["input_data_versions"] == versions
    [note] = [n for _r, n in storage.outbox.recent(limit=1)]
    [episode] = trace(storage, note.correlation_id)
    recorded = {i["input"]: i["data_version"] for i in episode.detections[0]["inputs"]}
    assert recorded == {name: seen["data_version"] for name, seen in versions.items()}
    assert recorded["market_prices"]
    report = verify(storage.engine)
    assert report.ok, [f.describe() for f in report.findings]


def test_version_rows_refuse_update_and_delete(storage: Storage) -> None:
    _hot_path_alerts(storage)
    for statement in (evaluation_lineage.update().values(versions={}),
                      evaluation_lineage.delete()):
        with pytest.raises((sa.exc.DBAPIError, RiskMonitorError)), storage.engine.begin() as c:
            c.execute(statement)
    assert verify(storage.engine).ok


def test_an_edited_version_row_is_caught_and_names_the_entry(storage: Storage) -> None:
    context = _hot_path_alerts(storage)
    digest = str(context["lineage_digest"])
    versions = {**context["lineage_digest"].versions}
    versions["market_prices"] = {**versions["market_prices"], "data_version": "f" * 24}
    with _tampering_lineage(storage) as conn:
        conn.execute(evaluation_lineage.update().where(evaluation_lineage.c.digest == digest)
                     .values(versions=versions))
    report = verify(storage.engine)
    assert not report.ok
    first = report.first
    assert first is not None and first.check == "lineage"
    assert first.subject == f"evaluation_lineage:{digest}"
    assert "edited outside the application" in first.problem
    assert first.entry_id is not None and first.alert is not None  # the first alert naming it


def test_a_deleted_or_forged_version_row_is_caught(storage: Storage) -> None:
    context = _hot_path_alerts(storage)
    digest = str(context["lineage_digest"])
    forged_versions = {"market_prices": {"data_version": "forged"}}
    with _tampering_lineage(storage) as conn:
        conn.execute(evaluation_lineage.delete())
        conn.execute(evaluation_lineage.insert().values(
            digest=versions_digest(forged_versions), recorded_at=T0, versions=forged_versions))
    report = verify(storage.engine)
    problems = {f.subject: f.problem for f in report.findings}
    assert "deleted outside the application" in problems[f"evaluation_lineage:{digest}"]
    assert "inserted outside the application" in \
        problems[f"evaluation_lineage:{versions_digest(forged_versions)}"]


@pytest.mark.parametrize("table", ["audit_log", "evaluation_lineage"])
def test_the_application_role_cannot_rewrite_audit_rows(pg_storage: Storage, table: str) -> None:
    """PostgreSQL: as ``risk_monitor_app`` (the role the service and Dagster log in through)
    audit rows can be read and appended, never updated, deleted or truncated, even with the
    append-only trigger out of the way (docs/storage-and-alerting.md "Database roles")."""
    _hot_path_alerts(pg_storage)
    for statement in (f"UPDATE {table} SET recorded_at = recorded_at"
                      if table == "evaluation_lineage" else f"UPDATE {table} SET at = at",
                      f"DELETE FROM {table}", f"TRUNCATE {table}"):
        with pytest.raises(sa.exc.DBAPIError, match="permission denied"), \
                pg_storage.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")  # as the owner
            conn.exec_driver_sql("SET LOCAL ROLE risk_monitor_app")
            conn.exec_driver_sql(statement)
    with pg_storage.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL ROLE risk_monitor_app")
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()  # reads
    assert verify(pg_storage.engine).ok


def test_an_evaluation_s_later_alerts_skip_the_row_once_it_is_seen_stored(
        storage: Storage) -> None:
    """The first alert writes the row, the second finds it (nothing inserted) and the digest
    remembers that, so a third writes nothing; a new evaluation's digest starts afresh."""
    context = _hot_path_alerts(storage)  # two alert transactions
    ref = context["lineage_digest"]
    assert ref.stored_in == {id(storage.engine)}
    at = T0 + timedelta(minutes=2)
    application.raise_alerts(storage, [make_result("BREACH", at, scope="venue:okx")], now=at,
                             policy=AlertPolicy(), context=context)
    assert len(_rows(storage)) == 1
    assert verify(storage.engine).ok
    fresh = HotPathLineage(None).context(
        SimpleNamespace(snapshot=_snapshot(), config_version="cfg-v1"))  # type: ignore[arg-type]
    assert str(fresh["lineage_digest"]) == str(ref) and not fresh["lineage_digest"].stored_in
