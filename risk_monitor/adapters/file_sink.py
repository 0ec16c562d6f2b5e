"""The JSON-lines file sink: the alert destination without Slack (embedded demo) and the
fallback while Slack refuses our configuration (``notifiers.build_fallback``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson

from risk_monitor.adapters.alert_messages import render_text
from risk_monitor.adapters.sql.codec import Clock, notification_payload, utc_now
from risk_monitor.domain.model import Notification
from risk_monitor.platform.errors import NotificationError
from risk_monitor.platform.logging import get_logger, log_context

log = get_logger(__name__)


class FileSink:
    """Appends one JSON line per notification (embedded demo, no Slack) and logs it.

    Lines are flushed and fsynced before ``send`` returns, so the outbox only marks a
    notification sent once it is on disk. The delivery ref is ``file:<name>:<byte offset>``.
    """

    name = "file"

    def __init__(self, path: Path, *, clock: Clock = utc_now) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()

    def send(self, notification: Notification, previous_ref: str | None) -> str:
        n = notification
        record = {"written_at": self._clock().isoformat(), "previous_ref": previous_ref,
                  "text": render_text(n), **notification_payload(n)}
        line = orjson.dumps(record) + b"\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    offset = os.lseek(fd, 0, os.SEEK_END)
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise NotificationError(f"cannot write alert sink {self.path}: {exc}",
                                    source="file_sink") from exc
        with log_context(correlation_id=n.correlation_id):
            log.warning("risk alert", kind=n.kind.value, status=n.status.value,
                        severity=n.severity.value, limit_id=n.limit_id, scope=n.scope,
                        value=n.value, utilisation=n.utilisation,
                        idempotency_key=n.idempotency_key, sink=str(self.path))
        return f"file:{self.path.name}:{offset}"
