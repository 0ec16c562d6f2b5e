"""Quote admission: which quotes an evaluation may use, written once for both paths.

Every reader of quotes (the REST / Redis snapshot of the Dagster run, the service's hot path,
the websocket feed, the Dagster price checks) asks this module, so a quote the page uses is a
quote the audited record uses. A quote is *fresh* when its exchange time lies within
``[now - max_age_s, now + max_future_skew_s]``, *stale* outside it, an *outlier* when it
deviates more than ``max_deviation`` from its own fields or other venues (the price sanity
gate), and a configured instrument without a usable quote is *missing*. Only fresh, sane quotes
are admitted; the venue's status names everything else, so its limits become UNKNOWN (fail
closed) rather than being evaluated on an absurd tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.platform.errors import DataValidationError, MissingDataError, StaleDataError

MAX_LISTED = 10  # instruments named in one status message


@dataclass(frozen=True)
class QuotePolicy:
    """The admission budget (from ``settings.market_data``)."""

    max_age_s: float
    max_future_skew_s: float
    max_deviation: float


@dataclass(frozen=True)
class VenueAdmission:
    """What one venue's quotes came to: how many were admitted and what was not."""

    venue: str
    admitted: int
    stale: tuple[str, ...]  # older than the budget or from the future
    missing: tuple[str, ...]  # configured, no quote at all
    outliers: Mapping[str, str]  # instrument -> why it is absurd

    def problem(self, policy: QuotePolicy) -> tuple[str, str] | None:
        """(error code, message) when the venue did not deliver everything usable."""
        messages: list[str] = []
        code: str | None = None
        if self.outliers:
            code = DataValidationError.code
            messages.append(f"{len(self.outliers)} absurd quote(s) from {self.venue} (more than "
                            f"{policy.max_deviation:.0%} off): {_listed(sorted(self.outliers))}")
        if self.stale:
            code = code or StaleDataError.code
            messages.append(f"{len(self.stale)} quote(s) from {self.venue} older than "
                            f"{policy.max_age_s:g}s or in the future: {_listed(self.stale)}")
        if self.missing:
            code = code or MissingDataError.code
            messages.append(f"no quote from {self.venue} for {len(self.missing)} configured "
                            f"instrument(s): {_listed(self.missing)}")
        if code is None and not self.admitted:
            return MissingDataError.code, f"no quotes from {self.venue}"
        return None if code is None else (code, "; ".join(messages))


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def stale_mask(frame: pd.DataFrame, now: datetime, policy: QuotePolicy) -> pd.Series:
    """True for quotes outside ``[now - max_age_s, now + max_future_skew_s]``."""
    current = pd.Timestamp(now)
    return ((frame["timestamp"] < current - timedelta(seconds=policy.max_age_s))
            | (frame["timestamp"] > current + timedelta(seconds=policy.max_future_skew_s)))


def admit_quotes(frame: pd.DataFrame, symbols: Mapping[str, Sequence[str]], now: datetime,
                 policy: QuotePolicy) -> tuple[pd.DataFrame, dict[str, VenueAdmission]]:
    """The admitted quotes (fresh and sane) and, per venue in ``symbols``, what was not."""
    frame = frame[frame["venue"].isin(list(symbols))].reset_index(drop=True)
    bad_time = stale_mask(frame, now, policy)
    fresh = frame[~bad_time].reset_index(drop=True)
    found = price_outliers(fresh, policy.max_deviation)
    admitted = fresh.drop(index=found.index).reset_index(drop=True)
    verdicts: dict[str, VenueAdmission] = {}
    for venue, wanted in symbols.items():
        mine = admitted["venue"] == venue
        stale = sorted(set(frame.loc[bad_time & (frame["venue"] == venue), "instrument"]))
        outliers = {str(r.instrument): str(r.reason) for r in found.itertuples()
                    if r.venue == venue}
        have = set(admitted.loc[mine, "instrument"]) | set(stale) | set(outliers)
        verdicts[venue] = VenueAdmission(
            venue=venue, admitted=int(mine.sum()), stale=tuple(stale),
            missing=tuple(s for s in wanted if s not in have), outliers=outliers)
    return admitted, verdicts


def admitted_quotes(frame: pd.DataFrame, symbols: Mapping[str, Sequence[str]], now: datetime,
                    policy: QuotePolicy, *, failed: Iterable[SourceStatus] = (),
                    endpoint_overrides: Mapping[str, str | None] | None = None) -> Collected:
    """Quotes as an evaluation reads them: admitted rows plus one status per venue.

    ``failed`` are venues whose fetch failed as a whole (their status is kept as it is).
    """
    failures = {s.venue: s for s in failed}
    overrides = dict(endpoint_overrides or {})
    asked = {v: s for v, s in symbols.items() if v not in failures}
    admitted, verdicts = admit_quotes(frame, asked, now, policy)
    statuses: list[SourceStatus] = []
    rejected: dict[str, str] = {}
    for venue in symbols:
        if venue in failures:
            statuses.append(failures[venue])
            continue
        verdict = verdicts[venue]
        rejected.update({f"{venue}:{i}": why for i, why in verdict.outliers.items()})
        problem = verdict.problem(policy)
        statuses.append(SourceStatus(
            kind=SourceKind.MARKET, venue=venue, account="*", ok=problem is None, as_of=now,
            rows=verdict.admitted, error_code=problem[0] if problem else None,
            error=problem[1] if problem else None, endpoint_override=overrides.get(venue)))
    return Collected(frame=admitted, sources=tuple(statuses), rejected=rejected)


def quotes_from_rows(rows: Iterable[Mapping[str, Any]], symbols: Mapping[str, Sequence[str]],
                     now: datetime, policy: QuotePolicy,
                     endpoint_overrides: Mapping[str, str | None] | None = None) -> Collected:
    """:func:`admitted_quotes` over in-memory quote rows (the hot path's quote book)."""
    return admitted_quotes(prices_frame(rows), symbols, now, policy,
                           endpoint_overrides=endpoint_overrides)


def tick_rejection(row: Mapping[str, Any], *, now: datetime, policy: QuotePolicy,
                   last_accepted: pd.Timestamp | None) -> str | None:
    """Why one live tick must not be stored (``None`` when it is fine); a metric label.

    The per-tick half of admission: invalid fields, out of the time budget, out of order.
    Cross-venue sanity needs the whole book, so it runs in :func:`admit_quotes`.
    """
    return float_tick_rejection(
        row.get("last"), row.get("mark"), row.get("bid"), row.get("ask"),
        int(pd.Timestamp(row["timestamp"]).value), now_ns=int(pd.Timestamp(now).value),
        policy=policy,
        last_ns=None if last_accepted is None else int(pd.Timestamp(last_accepted).value))


def float_tick_rejection(last: float | None, mark: float | None, bid: float | None,
                         ask: float | None, t_ns: int, *, now_ns: int, policy: QuotePolicy,
                         last_ns: int | None) -> str | None:
    """:func:`tick_rejection` on plain floats and epoch ns: what the live feed runs per tick."""
    for value in (last, mark):
        if value is None or not math.isfinite(value) or value <= 0:
            return "invalid"
    for value in (bid, ask):
        if value is not None and (not math.isfinite(value) or value <= 0):
            return "invalid"
    if bid is not None and ask is not None and bid > ask:
        return "invalid"
    if (t_ns - now_ns) / 1e9 > policy.max_future_skew_s:
        return "future"
    if (now_ns - t_ns) / 1e9 > policy.max_age_s:
        return "stale"
    if last_ns is not None and t_ns < last_ns:
        return "out_of_order"
    return None


def _off(a: float | None, b: float, max_deviation: float) -> bool:
    """``|a / b - 1| > max_deviation``; a missing or non-finite ``a`` is no deviation."""
    if a is None or not math.isfinite(a) or not b:
        return False
    return abs(a / b - 1) > max_deviation


def quote_outlier(last: float, mark: float | None, bid: float | None, ask: float | None,
                  pair_lasts: Sequence[tuple[str, float]], venue: str,
                  max_deviation: float) -> str:
    """Why one quote is absurd ("" when sane), the one price sanity rule: its own fields
    against ``last``, then the other venues' quotes of its base/quote pair (their median from
    three venues; with two, a gap flags both, since neither can be trusted over the other).
    ``pair_lasts`` are (venue, last) of the pair's other fresh quotes."""
    reasons: list[str] = []
    if mark is not None and _off(mark, last, max_deviation):  # (None: no call, per tick)
        reasons.append("mark far from last")
    if bid is not None and _off(bid, last, max_deviation):
        reasons.append("bid far from last")
    if ask is not None and _off(ask, last, max_deviation):
        reasons.append("ask far from last")
    if not pair_lasts:  # no other venue (per tick, most quotes): nothing to compare with
        return "; ".join(reasons)
    lasts = [last, *(value for _, value in pair_lasts)]
    venues = len({venue, *(v for v, _ in pair_lasts)})
    if venues >= 3:
        ordered = sorted(lasts)
        middle = len(ordered) // 2
        median = (ordered[middle] if len(ordered) % 2
                  else (ordered[middle - 1] + ordered[middle]) / 2)
        if _off(last, median, max_deviation):
            reasons.append("far from other venues' median")
    elif venues == 2 and max(lasts) / min(lasts) - 1 > max_deviation:
        reasons.append("two venues disagree")
    return "; ".join(reasons)


def price_outliers(frame: pd.DataFrame, max_deviation: float = 0.25) -> pd.DataFrame:
    """The quotes of ``frame`` :func:`quote_outlier` finds absurd (each judged against the
    other quotes of its pair in ``frame``), with a ``reason`` column; empty when all are sane."""
    if not len(frame):
        return frame.assign(reason=pd.Series(dtype="object"))
    rows = list(zip(frame["venue"], frame["base"], frame["quote"], frame["last"], frame["mark"],
                    frame["bid"], frame["ask"], strict=True))
    pairs: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        pairs.setdefault((row[1], row[2]), []).append(i)
    reasons = [quote_outlier(last, mark, bid, ask,
                             [(rows[j][0], rows[j][3]) for j in pairs[(base, quote)] if j != i],
                             venue, max_deviation)
               for i, (venue, base, quote, last, mark, bid, ask) in enumerate(rows)]
    out = frame.assign(reason=reasons)
    return out[out["reason"] != ""]
