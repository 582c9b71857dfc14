"""The operator's Prometheus metrics, in a registry of their own, served on /metrics.

Rule: one `Metrics` object per operator, passed in; no module-level collectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


@dataclass
class Metrics:
    """Reconciles, their durations and errors, and objects managed, by kind."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "corral_operator_reconciles",
            "Reconciliations by kind and outcome (ok, invalid, error).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "corral_operator_reconcile_duration_seconds",
            "Time spent reconciling one object.",
            ["kind"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.errors = Counter(
            "corral_operator_errors",
            "Reconciliations that failed and will be retried.",
            ["kind"],
            registry=self.registry,
        )
        self.managed = Gauge(
            "corral_operator_objects_managed",
            "Objects of each kind the operator currently knows.",
            ["kind"],
            registry=self.registry,
        )

    @contextmanager
    def timed(self, kind: str) -> Iterator[Callable[[str], None]]:
        """Time one reconciliation; call the yielded function with its outcome (default ok)."""
        outcome = ["ok"]
        started = time.perf_counter()
        try:
            yield lambda value: outcome.__setitem__(0, value)
        except Exception:
            outcome[0] = "error"
            self.errors.labels(kind).inc()
            raise
        finally:
            self.durations.labels(kind).observe(time.perf_counter() - started)
            self.reconciles.labels(kind, outcome[0]).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def metrics_app(metrics: Metrics) -> web.Application:
    """An application serving GET /metrics."""

    async def serve(request: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app
