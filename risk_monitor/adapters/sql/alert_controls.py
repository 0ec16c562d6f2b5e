"""Silences and acknowledgements on SQL, each change audited in the same transaction.

The rules live in :mod:`risk_monitor.domain.silences`; this module stores them and answers the
dispatcher, which asks before each delivery (so a silence added while a row waits still holds
it). Rows are never deleted: an unsilenced silence keeps its row with ``expired_at`` set, so the
audit can say what was silenced, by whom, and for how long.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.audit_log import SqlAuditLog
from risk_monitor.adapters.sql.engine import read_only, write_tx
from risk_monitor.adapters.sql.schema import (
    alert_acknowledgements,
    alert_silence_notes,
    alert_silences,
    alert_states,
    outbox,
)
from risk_monitor.domain.model import LimitStatus
from risk_monitor.domain.silences import Acknowledgement, Matcher, Silence, labels_of
from risk_monitor.platform.errors import AlertControlError

SOURCE = "alert_controls"
#: ``details`` of an AlertControlError naming something that does not exist (REST: 404)
NOT_FOUND = {"reason": "not_found"}


@dataclass(frozen=True)
class AckTarget:
    """The alert an acknowledgement names: its series, current episode and status."""

    fingerprint: str
    episode: int
    status: LimitStatus
    limit_id: str
    scope: str
    correlation_id: str | None
    message_ref: str | None


@dataclass(frozen=True)
class AckedAlert:
    """An acknowledgement together with the alert it names (for listings)."""

    ack: Acknowledgement
    target: AckTarget

    @property
    def note_key(self) -> str:
        """Idempotency key of its thread note (one per fingerprint, episode and status)."""
        a = self.ack
        return f"ack:{a.fingerprint}:{a.episode}:{a.status.value}"


@dataclass(frozen=True)
class SilenceNote:
    """A silence to say in the thread of one firing alert it holds back (once per episode)."""

    silence: Silence
    fingerprint: str
    episode: int
    thread_ref: str

    @property
    def key(self) -> str:
        """Idempotency key of the note (one per silence, series and episode)."""
        return f"silence:{self.silence.id}:{self.fingerprint}:{self.episode}"

    @property
    def text(self) -> str:
        s = self.silence
        until = s.ends_at.strftime("%Y-%m-%d %H:%M UTC")
        return (f":no_bell: Silenced by {s.created_by} until {until}"
                + (f" ({s.comment})" if s.comment else "") + f": notifications of this alert "
                f"are held back; it is still recorded and counted in compliance. Silence {s.id}.")


class SqlAlertControls:
    """Create, end and read silences; acknowledge alert episodes."""

    def __init__(self, engine: Engine, *, clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = SqlAuditLog(engine)

    # -- silences -------------------------------------------------------------------------------
    def add_silence(self, matchers: Sequence[Matcher | str], *, ends_at: datetime,
                    created_by: str, comment: str, starts_at: datetime | None = None
                    ) -> Silence:
        """Store a silence (starting now unless ``starts_at``); invalid ones are refused."""
        now = self.clock()
        try:
            parsed = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
            silence = Silence(id=str(uuid.uuid4()), matchers=parsed,
                              starts_at=starts_at or now, ends_at=ends_at,
                              created_by=created_by, comment=comment)
        except ValueError as exc:
            raise AlertControlError(str(exc), source=SOURCE) from exc
        if silence.ends_at <= now:
            raise AlertControlError("a silence must end in the future", source=SOURCE)
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(alert_silences.insert().values(
                id=silence.id, matchers=[_matcher_doc(m) for m in parsed],
                starts_at=silence.starts_at, ends_at=silence.ends_at,
                created_by=created_by, comment=comment, created_at=now))
            self.audit.record("silence_created", now, None, {
                **_silence_doc(silence), "actor": created_by}, conn=conn)
        return silence

    def expire_silence(self, silence_id: str, *, by: str) -> Silence:
        """End a silence now (``unsilence``); notifications it held stay held."""
        now = self.clock()
        with write_tx(self.engine, source=SOURCE) as conn:
            row = conn.execute(sa.select(alert_silences)
                               .where(alert_silences.c.id == silence_id)).first()
            if row is None:
                raise AlertControlError(f"no silence {silence_id!r}", source=SOURCE,
                                        details=NOT_FOUND)
            silence = silence_from_row(row._mapping)
            if not silence.active(now) and silence.starts_at <= now:
                raise AlertControlError(f"silence {silence_id} has already ended",
                                        source=SOURCE)
            conn.execute(alert_silences.update().where(alert_silences.c.id == silence_id)
                         .values(expired_at=now, expired_by=by))
            self.audit.record("silence_expired", now, None, {
                **_silence_doc(silence), "actor": by}, conn=conn)
        return Silence(**{**silence.__dict__, "expired_at": now})

    def silences(self, *, active_at: datetime | None = None,
                 conn: Connection | None = None) -> list[Silence]:
        """Every silence, or only those active at ``active_at`` (oldest first)."""
        query = sa.select(alert_silences).order_by(alert_silences.c.created_at)
        if active_at is not None:
            query = query.where(alert_silences.c.starts_at <= active_at,
                                alert_silences.c.ends_at > active_at,
                                sa.or_(alert_silences.c.expired_at.is_(None),
                                       alert_silences.c.expired_at > active_at))
        return [silence_from_row(r) for r in self._rows(query, conn)]

    # -- acknowledgements -----------------------------------------------------------------------
    def target(self, key: str, conn: Connection | None = None) -> AckTarget:
        """The alert named by its fingerprint or by a correlation id of one of its episodes."""
        query = sa.select(alert_states).where(sa.or_(alert_states.c.fingerprint == key,
                                                     alert_states.c.correlation_id == key))
        row = next(iter(self._rows(query, conn)), None)
        if row is None:
            raise AlertControlError(f"no alert with fingerprint or correlation id {key!r}",
                                    source=SOURCE, details=NOT_FOUND)
        return _target(row)

    def acknowledge(self, key: str, *, by: str, comment: str = "") -> AckedAlert:
        """Acknowledge the alert's current episode in its current status (idempotent)."""
        if not by.strip():
            raise AlertControlError("an acknowledgement needs an author", source=SOURCE)
        now = self.clock()
        with write_tx(self.engine, source=SOURCE) as conn:
            target = self.target(key, conn)
            if target.status is LimitStatus.OK:
                raise AlertControlError(
                    f"alert {target.fingerprint} is OK: nothing to acknowledge", source=SOURCE)
            existing = conn.execute(sa.select(alert_acknowledgements).where(
                alert_acknowledgements.c.fingerprint == target.fingerprint,
                alert_acknowledgements.c.episode == target.episode,
                alert_acknowledgements.c.status == target.status.value)).first()
            if existing is not None:
                return AckedAlert(ack_from_row(existing._mapping), target)
            ack = Acknowledgement(fingerprint=target.fingerprint, episode=target.episode,
                                  status=target.status, acked_by=by, acked_at=now,
                                  comment=comment)
            conn.execute(alert_acknowledgements.insert().values(
                fingerprint=ack.fingerprint, episode=ack.episode, status=ack.status.value,
                acked_by=by, acked_at=now, comment=comment))
            self.audit.record("alert_acknowledged", now, target.correlation_id, {
                "fingerprint": ack.fingerprint, "episode": ack.episode,
                "status": ack.status.value, "limit_id": target.limit_id,
                "scope": target.scope, "actor": by, "comment": comment}, conn=conn)
        return AckedAlert(ack, target)

    def acknowledgements(self, fingerprints: Iterable[str] | None = None,
                         conn: Connection | None = None) -> list[Acknowledgement]:
        """Acknowledgements of these series (all when None), oldest first."""
        query = sa.select(alert_acknowledgements).order_by(alert_acknowledgements.c.id)
        if fingerprints is not None:
            query = query.where(alert_acknowledgements.c.fingerprint.in_(sorted(fingerprints)))
        return [ack_from_row(r) for r in self._rows(query, conn)]

    def _rows(self, query: sa.Select[Any], conn: Connection | None) -> list[RowMapping]:
        """``query``'s rows, in the caller's transaction when it passes one."""
        if conn is not None:
            return list(conn.execute(query).mappings())
        with read_only(self.engine, source=SOURCE) as own:
            return list(own.execute(query).mappings())

    def unnoted_acknowledgements(self, limit: int = 20) -> list[tuple[int, AckedAlert]]:
        """Acknowledgements still holding whose alert has a thread but no note of them yet."""
        a, s = alert_acknowledgements, alert_states
        return self._holding(a.c.noted_ref.is_(None), s.c.message_ref.is_not(None), limit=limit)

    def mark_noted(self, ack_id: int, ref: str) -> None:
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(alert_acknowledgements.update()
                         .where(alert_acknowledgements.c.id == ack_id).values(noted_ref=ref))

    def unnoted_silences(self, now: datetime, limit: int = 20) -> list[SilenceNote]:
        """Active silences matching a firing alert that has a thread not told so yet (the
        labels are those of the episode's latest notification, as the dispatcher matches)."""
        silences = self.silences(active_at=now)
        if not silences:
            return []
        st, o, notes = alert_states, outbox, alert_silence_notes
        latest = (sa.select(o.c.fingerprint, o.c.episode, sa.func.max(o.c.sequence).label("seq"))
                  .group_by(o.c.fingerprint, o.c.episode).subquery())
        query = (sa.select(st.c.fingerprint, st.c.episode, st.c.message_ref, o.c.payload)
                 .join(latest, sa.and_(latest.c.fingerprint == st.c.fingerprint,
                                       latest.c.episode == st.c.episode))
                 .join(o, sa.and_(o.c.fingerprint == latest.c.fingerprint,
                                  o.c.episode == latest.c.episode, o.c.sequence == latest.c.seq))
                 .where(st.c.status != LimitStatus.OK.value, st.c.message_ref.is_not(None)))
        with read_only(self.engine, source=SOURCE) as conn:
            rows = list(conn.execute(query))
            noted = {tuple(r) for r in conn.execute(
                sa.select(notes.c.silence_id, notes.c.fingerprint, notes.c.episode)
                .where(notes.c.silence_id.in_([x.id for x in silences])))}
        found: list[SilenceNote] = []
        for row in rows:
            labels = labels_of(codec.notification_from_payload(row.payload))
            found += [SilenceNote(x, row.fingerprint, row.episode, row.message_ref)
                      for x in silences if (x.id, row.fingerprint, row.episode) not in noted
                      and x.matches(labels)]
        return found[:limit]

    def mark_silence_noted(self, note: SilenceNote, ref: str) -> None:
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(alert_silence_notes.insert().values(
                silence_id=note.silence.id, fingerprint=note.fingerprint, episode=note.episode,
                noted_ref=ref, noted_at=self.clock()))

    def current_acknowledgements(self) -> list[AckedAlert]:
        """Acknowledgements that still hold: the alert is in the acknowledged episode and
        status (a change of status, or a new episode, ends them)."""
        return [acked for _, acked in self._holding()]

    def _holding(self, *where: Any, limit: int | None = None) -> list[tuple[int, AckedAlert]]:
        """(id, acknowledgement) of those that still hold and meet ``where``, oldest first."""
        a, s = alert_acknowledgements, alert_states
        query = (sa.select(a, s.c.limit_id, s.c.scope, s.c.correlation_id, s.c.message_ref)
                 .join(s, sa.and_(s.c.fingerprint == a.c.fingerprint,
                                  s.c.episode == a.c.episode, s.c.status == a.c.status))
                 .where(*where).order_by(a.c.id).limit(limit))
        with read_only(self.engine, source=SOURCE) as conn:
            return [(row["id"], AckedAlert(ack_from_row(row), _target(row)))
                    for row in conn.execute(query).mappings()]


def _matcher_doc(m: Matcher) -> dict[str, str]:
    return {"name": m.name, "op": m.op, "value": m.value}


def _silence_doc(s: Silence) -> dict[str, Any]:
    return {"silence_id": s.id, "matchers": [str(m) for m in s.matchers],
            "starts_at": s.starts_at.isoformat(), "ends_at": s.ends_at.isoformat(),
            "created_by": s.created_by, "comment": s.comment}


def silence_as_dict(s: Silence, now: datetime) -> dict[str, Any]:
    """The JSON form shown by the CLI, REST and the dashboard."""
    return {**_silence_doc(s), "matchers": [_matcher_doc(m) for m in s.matchers],
            "expired_at": s.expired_at.isoformat() if s.expired_at else None,
            "active": s.active(now)}


def acked_as_dict(item: AckedAlert) -> dict[str, Any]:
    ack, target = item.ack, item.target
    return {"fingerprint": ack.fingerprint, "episode": ack.episode, "status": ack.status.value,
            "acked_by": ack.acked_by, "acked_at": ack.acked_at.isoformat(),
            "comment": ack.comment, "limit_id": target.limit_id, "scope": target.scope,
            "correlation_id": target.correlation_id}


def silence_from_row(row: Any) -> Silence:
    """A silence from its row (or its JSON form, as ``alert_change`` reads it)."""
    return Silence(id=row["id"], matchers=tuple(
        Matcher(name=m["name"], value=m["value"], op=m["op"]) for m in row["matchers"]),
        starts_at=row["starts_at"], ends_at=row["ends_at"], created_by=row["created_by"],
        comment=row["comment"], expired_at=row["expired_at"])


def _target(row: Any) -> AckTarget:
    """The alert of an ``alert_states`` row (or of an acknowledgement joined to its state)."""
    return AckTarget(status=LimitStatus(row["status"]), **{k: row[k] for k in (
        "fingerprint", "episode", "limit_id", "scope", "correlation_id", "message_ref")})


def ack_from_row(row: Any) -> Acknowledgement:
    """An acknowledgement from its row (or its JSON form, as ``alert_change`` reads it)."""
    return Acknowledgement(fingerprint=row["fingerprint"], episode=row["episode"],
                           status=LimitStatus(row["status"]), acked_by=row["acked_by"],
                           acked_at=row["acked_at"], comment=row["comment"])
