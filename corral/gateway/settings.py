"""Gateway settings: one frozen, grouped value for ``create_app``; secrets stay out of reprs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from corral.api.catalog import MCPCatalogEntry
from corral.api.policies import AccessPolicy
from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry
from corral.store.audit import AuditSettings
from corral.store.pools import PoolSettings


@dataclass(frozen=True)
class Roles:
    """Groups whose members administer keys or read audit bodies."""

    admin_groups: frozenset[str] = frozenset({"corral-admins"})
    auditor_groups: frozenset[str] = frozenset({"corral-auditors"})


@dataclass(frozen=True)
class RoutingSettings:
    """The MCP front door: keys, servers, edge limits and timeouts (all in seconds).

    ``signing_keys`` sign identity assertions (the first signs; all are published in the JWKS).
    ``session_keys`` are 32-byte AES-256-GCM keys for session ids (the first seals; all open).
    ``policies`` None skips the gateway's early policy check (each shim still decides).
    ``catalog`` is what ``/v0/servers`` lists when servers come from the static list.
    ``body_timeout`` bounds reading a request body (a stalled client gets 408).
    ``upstream_timeout`` is the longest silence accepted from a shim on a response or stream.
    ``rate_per_second`` and ``rate_burst`` form a token bucket per user, per replica.
    """

    signing_keys: Sequence[ec.EllipticCurvePrivateKey] = field(repr=False)
    session_keys: Sequence[bytes] = field(repr=False)
    issuer: str | None = None
    servers: Sequence[ServerEntry] = ()
    policies: Sequence[AccessPolicy] | None = None
    catalog: Sequence[MCPCatalogEntry] = ()
    allowed_origins: frozenset[str] = frozenset()
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout: float = 30.0
    connect_timeout: float = 10.0
    upstream_timeout: float = 300.0
    max_connections: int = 1000
    rate_per_second: float = 50.0
    rate_burst: float = 100.0
    session_max_age: float = 24 * 3600.0
    assertion_lifetime: int = 60
    authorization_servers: Sequence[str] = ()


@dataclass(frozen=True)
class GatewaySettings:
    """Everything a gateway replica needs to start.

    ``shim_tokens`` maps each shim's bearer token to its scope, ``namespace/server`` or
    ``namespace/*`` (``corral.gateway.shimscope``); a shim may only post events in its scope.
    ``static_users`` maps tokens to principals for ``corral dev`` (empty in production).
    ``routing`` None serves no MCP routes.
    """

    database: PoolSettings
    public_base_url: str
    shim_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    static_users: Mapping[str, Principal] = field(default_factory=dict, repr=False)
    roles: Roles = field(default_factory=Roles)
    audit: AuditSettings = field(default_factory=AuditSettings)
    api_key_cache_ttl: float = 5.0
    listen_for_revocations: bool = True
    maintenance_interval: float = 3600.0
    max_ingest_events: int = 5000
    max_ingest_bytes: int = 16 * 1024 * 1024
    readiness_timeout: float = 2.0
    routing: RoutingSettings | None = None
