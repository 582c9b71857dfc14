"""Prometheus plumbing shared by the processes.

Rule: a metric counted on every request is kept as plain numbers in a dict keyed by its label
values, and turned into Prometheus samples only when /metrics is scraped. prometheus_client's
own children take a lock and several calls per update (2 to 3 us each on the request path);
these cost a dict update. Updates and scrapes run on the one event loop thread of the process
that owns the metric. Label values must come from a bounded set (the callers bound them).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""prometheus_client's default histogram buckets (seconds), +Inf implied."""


class _LeanMetric:
    """Name, help and label names of a lean metric; registered once the subclass is ready."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)


class LeanCounter(_LeanMetric):
    """A counter with labels, exported as ``<name>_total``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.counts: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, *labels: str) -> None:
        """Add one to the series ``labels`` (one value per label name, in order)."""
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in list(self.counts.items()):
            family.add_metric(list(labels), value)
        yield family


class LeanHistogram(_LeanMetric):
    """A histogram with labels (or none), exported as ``<name>_bucket``, ``_count``, ``_sum``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets or math.inf in buckets:
            raise ValueError("histogram buckets must be finite, distinct and ascending")
        super().__init__(name, documentation, labelnames)
        self._bounds = tuple(float(bound) for bound in buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}
        """Per label set: the count of each bucket (the last one +Inf), then the sum."""
        registry.register(self)

    def observe(self, value: float, *labels: str) -> None:
        """Record ``value`` in the series ``labels``."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self._bounds) + 2)
        series[bisect.bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        edges = [repr(bound) for bound in self._bounds] + ["+Inf"]
        for labels, series in list(self.series.items()):
            buckets, total = [], 0.0
            for edge, count in zip(edges, series, strict=False):
                total += count
                buckets.append((edge, total))
            family.add_metric(list(labels), buckets, series[-1])
        yield family
