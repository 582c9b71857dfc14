"""The gateway's Prometheus metrics, in a registry per application (no process globals).

The per-request metrics are ``corral.common.metrics`` lean ones (plain numbers, turned into
samples at scrape time); the others are prometheus_client's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from corral.common.metrics import LeanCounter, LeanHistogram

MCP_METHODS = frozenset({"POST", "GET", "DELETE"})


@dataclass
class GatewayMetrics:
    """Every metric the gateway exports on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.authentications = LeanCounter(
            "corral_gateway_authentications",
            "Bearer authentications of API callers",
            ["result"],
            r,
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
        self.mcp_requests = LeanCounter(
            "corral_gateway_mcp_requests",
            "MCP requests on /mcp routes by HTTP method and answer status",
            ["method", "status"],
            r,
        )
        self.mcp_seconds = LeanHistogram(
            "corral_gateway_mcp_seconds",
            "Time from an MCP request to its answer's first byte",
            [],
            r,
        )

    def count_authentication(self, result: str) -> None:
        """One bearer authentication with ``result`` (ok, missing, invalid)."""
        self.authentications.inc(result)

    def count_mcp_request(self, method: str, status: int) -> None:
        """One MCP request answered with ``status``; HTTP methods the MCP routes do not serve
        count as "other", so clients cannot grow the label set."""
        self.mcp_requests.inc(method if method in MCP_METHODS else "other", str(status))
