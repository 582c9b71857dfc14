"""Prometheus plumbing shared by the processes.

Rule: a per-request metric with labels is reached through ``Children``, which resolves each
label set once and keeps the child (bounded), so the request path does no ``labels()`` lookup
after the first request with those labels.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.metrics import MetricWrapperBase

MAX_CHILDREN = 1024
"""Label sets remembered per metric; beyond this they are resolved on every use."""


class Children:
    """The labelled children of one metric, each looked up once and then kept."""

    def __init__(self, metric: MetricWrapperBase, limit: int = MAX_CHILDREN) -> None:
        self._metric = metric
        self._limit = limit
        self._kept: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._kept.get(labels)
        if child is None:
            child = self._metric.labels(*labels)
            if len(self._kept) < self._limit:
                self._kept[labels] = child
        return child
