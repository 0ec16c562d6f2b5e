"""Source coverage: a failed whole-venue source (account "*") covers every account there."""

from __future__ import annotations

from datetime import UTC, datetime

from risk_monitor.domain.coverage import source_problems
from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor.domain.valuation import Freshness

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def status(account: str, ok: bool) -> SourceStatus:
    return SourceStatus(kind=SourceKind.CUSTODIAN, venue="fireblocks", account=account, ok=ok,
                        as_of=NOW, error_code=None if ok else "RM201",
                        error=None if ok else "503")


def test_failed_whole_venue_source_matches_every_account() -> None:
    problems = source_problems([status("*", ok=False)], Freshness(NOW, 60.0, 5.0))
    assert len(problems) == 1
    problem = problems[0]
    assert problem.account is None
    assert problem.matches("fireblocks", "vault-0")
    assert problem.matches("fireblocks", None)
    assert not problem.matches("binance", "main")


def test_failed_account_source_matches_only_that_account() -> None:
    problem = source_problems([status("vault-1", ok=False)], Freshness(NOW, 60.0, 5.0))[0]
    assert problem.matches("fireblocks", "vault-1")
    assert not problem.matches("fireblocks", "vault-2")


def test_expected_venue_without_source_is_blind() -> None:
    problems = source_problems([], Freshness(NOW, 60.0, 5.0), expected_venues=["okx"])
    assert problems[0].venue == "okx" and "blind" in problems[0].reason
