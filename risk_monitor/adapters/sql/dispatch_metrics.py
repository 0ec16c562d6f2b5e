"""The outbox dispatcher's metrics: the notifier's health and the delivery steps of an alert
claimed on insert (bound to their labels once: observed per alert)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFIER_UP = Gauge("risk_monitor_notifier_up",
                    "1 while the notifier accepts deliveries; 0 after it refused our "
                    "configuration (revoked token, unknown channel) until a delivery succeeds.",
                    ["notifier"])
DELIVERY_SECONDS = Histogram(
    "risk_monitor_alert_delivery_seconds",
    "Stage 'deliver' of an alert claimed on insert, by step: handoff = its transaction "
    "committed to the dispatcher's thread taking it (posts not made by the committing thread), "
    "send = the notifier's post (render and HTTP round trip; prepared while the commit was in "
    "flight: from the commit on), record = the delivery record "
    "written after the post.", ["step"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0))
HANDOFF_STEP = DELIVERY_SECONDS.labels(step="handoff")  # bound once: observed per alert
SEND_STEP = DELIVERY_SECONDS.labels(step="send")
RECORD_STEP = DELIVERY_SECONDS.labels(step="record")
DELIVERY_PATH = Counter(
    "risk_monitor_alert_delivery_path_total",
    "Batches of alerts claimed on insert, by the thread that posted them: ahead = built on "
    "the post-ahead thread while the commit was in flight and sent by the committing thread, "
    "inline = the committing thread, handoff = the dispatcher's thread (notifier slow, "
    "failing or busy).", ["path"])
POSTED_AHEAD = DELIVERY_PATH.labels(path="ahead")
POSTED_INLINE = DELIVERY_PATH.labels(path="inline")
HANDED_OFF = DELIVERY_PATH.labels(path="handoff")
