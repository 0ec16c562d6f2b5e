"""Counters and histograms the event loop updates on every tick, at a fraction of the cost.

A ``prometheus_client`` update takes a lock and two or three Python calls: ~1 µs a counter
increment, ~2 µs a histogram observation, and the tick path made six per tick (about a tenth
of the tick loop's CPU). These keep plain numbers instead, written by one thread (the event
loop: a ``+=`` from two threads could lose an update), and a collector exports them at each
scrape as the same Prometheus families: same names, help, labels and buckets, the same
cumulative counts and sums (``_created`` samples are left out).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One labelled counter: a plain float (module docstring)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One labelled histogram: a count per bucket and the sum, in one list (a scrape copies
    it in one step)."""

    __slots__ = ("_bounds", "counts")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)  # per bucket (not cumulative), then the sum

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is >= it (Prometheus' ``le``)."""
        counts = self.counts
        counts[bisect_left(self._bounds, amount)] += 1
        counts[-1] += amount


class _LoopMetric(Collector):
    """Children by label values, registered as a collector."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], CounterChild | HistogramChild] = {}
        self._lock = threading.Lock()  # children are added from any thread
        self._created = time.time()
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> CounterChild | HistogramChild:
        raise NotImplementedError

    def _child(self, values: tuple[str, ...]) -> CounterChild | HistogramChild:
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.setdefault(values, self._new_child())
        return child

    def _label_values(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, not {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def _items(self) -> list[tuple[tuple[str, ...], CounterChild | HistogramChild]]:
        with self._lock:
            return list(self._children.items())


class LoopCounter(_LoopMetric):
    """``prometheus_client.Counter`` for the tick path (module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)
        if not self.labelnames:
            self._child(())

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def labels(self, **labels: object) -> CounterChild:
        child = self._child(self._label_values(labels))
        assert isinstance(child, CounterChild)
        return child

    def inc(self, amount: float = 1.0) -> None:
        """The unlabelled counter's increment."""
        self.labels().inc(amount)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            assert isinstance(child, CounterChild)
            family.add_metric(list(values), child.value, created=self._created)
        yield family


class LoopHistogram(_LoopMetric):
    """``prometheus_client.Histogram`` for the tick path (module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: CollectorRegistry | None = REGISTRY) -> None:
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)
        if not self.labelnames:
            self._single = self.labels()

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def labels(self, **labels: object) -> HistogramChild:
        child = self._child(self._label_values(labels))
        assert isinstance(child, HistogramChild)
        return child

    def observe(self, amount: float) -> None:
        """The unlabelled histogram's observation."""
        self._single.observe(amount)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            assert isinstance(child, HistogramChild)
            counts = list(child.counts)  # one step under the interpreter lock: consistent
            cumulative, buckets = 0.0, []
            for bound, count in zip(self.bounds, counts, strict=False):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(values), buckets, counts[-1])
        yield family
