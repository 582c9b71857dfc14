"""The gateway's Prometheus metrics, in a registry per application (no process globals).

The per-request counters are incremented through ``count_*`` helpers over
``corral.common.metrics.Children``, so the request path does no ``labels()`` lookup after the
first request with a given label set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from corral.common.metrics import Children


@dataclass
class GatewayMetrics:
    """Every metric the gateway exports on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.authentications = Counter(
            "corral_gateway_authentications",
            "Bearer authentications of API callers",
            ["result"],
            registry=r,
        )
        self.audit_batches = Counter(
            "corral_gateway_audit_batches", "Audit batches posted by shims", ["outcome"], registry=r
        )
        self.audit_events = Counter(
            "corral_gateway_audit_events",
            "Audit events in accepted batches",
            ["result"],
            registry=r,
        )
        self.audit_ingest_seconds = Histogram(
            "corral_gateway_audit_ingest_seconds", "Time to store one audit batch", registry=r
        )
        self.mcp_requests = Counter(
            "corral_gateway_mcp_requests",
            "MCP requests on /mcp routes by HTTP method and answer status",
            ["method", "status"],
            registry=r,
        )
        self.mcp_seconds = Histogram(
            "corral_gateway_mcp_seconds",
            "Time from an MCP request to its answer's first byte",
            registry=r,
        )
        self._authentications = Children(self.authentications)
        self._mcp_requests = Children(self.mcp_requests)

    def count_authentication(self, result: str) -> None:
        """One bearer authentication with ``result`` (ok, missing, invalid)."""
        self._authentications(result).inc()

    def count_mcp_request(self, method: str, status: int) -> None:
        """One MCP request answered with ``status``."""
        self._mcp_requests(method, str(status)).inc()
