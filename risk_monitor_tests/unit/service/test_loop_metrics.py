"""The tick path's counters and histograms export what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from risk_monitor.service.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.0005, 0.001, 0.005, 0.1, 1.0)
#: on a bound, between bounds, below the first, past the last
VALUES = (0.0, 0.0005, 0.0007, 0.001, 0.003, 0.1, 0.5, 2.0, 30.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text a scrape reads, without ``_created`` samples (the loop metrics leave them out)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def test_loop_metrics_export_the_same_samples_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_ticks_total", "Ticks.", ["venue"], registry=theirs)
    loop_counter = LoopCounter("x_ticks_total", "Ticks.", ["venue"], registry=ours)
    histogram = Histogram("x_lag_seconds", "Lag.", ["venue"], buckets=BUCKETS, registry=theirs)
    loop_histogram = LoopHistogram("x_lag_seconds", "Lag.", ["venue"], buckets=BUCKETS,
                                   registry=ours)
    plain = Histogram("x_decide_seconds", "Decide.", buckets=BUCKETS, registry=theirs)
    loop_plain = LoopHistogram("x_decide_seconds", "Decide.", buckets=BUCKETS, registry=ours)
    for venue in ("binance", "okx"):
        for value in VALUES:
            counter.labels(venue=venue).inc()
            loop_counter.labels(venue=venue).inc()
            histogram.labels(venue=venue).observe(value)
            loop_histogram.labels(venue=venue).observe(value)
            plain.observe(value)
            loop_plain.observe(value)
        counter.labels(venue=venue).inc(3)
        loop_counter.labels(venue=venue).inc(3)
    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("x_ticks_total", {"venue": "okx"}) == len(VALUES) + 3
    assert ours.get_sample_value("x_lag_seconds_bucket", {"venue": "okx", "le": "0.001"}) == 4


def test_an_unlabelled_loop_counter_is_exported_before_its_first_increment() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("x_full_total", "Full evaluations.", registry=registry)
    assert registry.get_sample_value("x_full_total") == 0.0
    counter.inc()
    assert registry.get_sample_value("x_full_total") == 1.0
