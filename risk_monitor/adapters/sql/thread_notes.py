"""The dispatcher's thread notes: who acknowledged or silenced an alert, said once in its
Slack thread."""

from __future__ import annotations

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.alert_controls import SqlAlertControls
from risk_monitor.adapters.sql.dispatch_policy import PostsThreadNotes
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error

log = get_logger(__name__)


def post_thread_notes(controls: SqlAlertControls, notifier: PostsThreadNotes,
                      notifier_name: str, clock: codec.Clock) -> None:
    """Say in each acknowledged or silenced alert's thread who owns or silenced it (once; a
    failure retries on the next dispatch; after a crash between post and record, the
    notifier adopts the note its thread holds: ``note_key``)."""
    for ack_id, item in controls.unnoted_acknowledgements():
        ack = item.ack
        text = (f":eyes: Acknowledged by {ack.acked_by} ({ack.status.value}); repeats "
                f"held until the status changes." + (f" {ack.comment}" if ack.comment
                                                     else ""))
        try:
            ref = notifier.post_note(str(item.target.message_ref), text, item.note_key)
        except Exception as exc:
            error = map_exception(exc, source=notifier_name)
            record_error(error)
            log.warning("acknowledgement note not posted; will retry",
                        error_code=error.code, fingerprint=ack.fingerprint)
            return
        controls.mark_noted(ack_id, ref)
    for note in controls.unnoted_silences(clock()):  # alerts: silences, once each
        try:
            ref = notifier.post_note(note.thread_ref, note.text, note.key)
        except Exception as exc:
            record_error(map_exception(exc, source=notifier_name))
            return
        controls.mark_silence_noted(note, ref)
