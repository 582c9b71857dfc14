"""The gateway's Prometheus metrics, in a registry per application (no process globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


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
