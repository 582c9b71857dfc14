"""The shim's Prometheus metrics, in a registry per application (no process globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from corral.common.metrics import LeanCounter, LeanHistogram

MAX_METHODS = 64
"""Distinct method labels kept; methods beyond these (clients choose them) count as "other"."""


@dataclass
class ShimMetrics:
    """Every metric the shim exports on the admin port's /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = LeanCounter(
            "corral_shim_messages", "MCP messages handled", ["method", "status"], r
        )
        self.latency = LeanHistogram(
            "corral_shim_request_seconds", "Time to answer a request", ["method"], r
        )
        self.denials = LeanCounter(
            "corral_shim_denials", "Messages denied by policy", ["method"], r
        )
        self.filter_calls = Counter(
            "corral_shim_filter_calls", "Webhook filter calls", ["filter", "outcome"], registry=r
        )
        self.audit_sent = Counter("corral_shim_audit_events_sent", "Events delivered", registry=r)
        self.audit_spooled = Counter(
            "corral_shim_audit_events_spooled", "Events written to the spool", registry=r
        )
        self.audit_dropped = Counter(
            "corral_shim_audit_events_dropped",
            "Events lost because the queue or the spool was full",
            registry=r,
        )
        self.audit_spool_bytes = Gauge(
            "corral_shim_audit_spool_bytes", "Bytes waiting in the spool", registry=r
        )
        self.config_reloads = Counter(
            "corral_shim_config_reloads", "Configuration reloads", ["outcome"], registry=r
        )
        self._methods: set[str] = set()

    def _method(self, method: str) -> str:
        if method in self._methods:
            return method
        if len(self._methods) >= MAX_METHODS:
            return "other"
        self._methods.add(method)
        return method

    def message(self, method: str, status: str) -> None:
        """Count one message."""
        self.messages.inc(self._method(method), status)

    def answered(self, method: str, seconds: float) -> None:
        """Record the time to answer one request."""
        self.latency.observe(seconds, self._method(method))

    def denied(self, method: str) -> None:
        """Count one message denied by policy."""
        self.denials.inc(self._method(method))
