"""What the shim derives from its configuration, rebuilt whole on every reload.

Rule: `Runtime` is immutable and swapped atomically; requests in flight keep the one they
started with, and nothing here holds sessions, so a reload never drops one. `ShimState` holds
what lives as long as the process: the upstream client, session owners, audit shipper, metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from corral.api.policy import ServerRef
from corral.common.assertion import AssertionVerifier, UsedIds
from corral.common.backlog import Backlog
from corral.common.egress import GuardedResolver, Network, RefusedAddressError, check_url
from corral.common.httpclient import OriginPool
from corral.common.ids import RandomIds
from corral.shim.audit import parse_path
from corral.shim.authorize import Authorizer, PolicyAuthorizer
from corral.shim.config import ShimConfig, with_secret_headers
from corral.shim.filters import FilterChain
from corral.shim.metrics import ShimMetrics
from corral.shim.sessions import SessionOwners
from corral.shim.shipper import AuditShipper
from corral.shim.tokens import TokenExchanger


@dataclass(frozen=True)
class Runtime:
    """The compiled configuration."""

    config: ShimConfig
    verifier: AssertionVerifier
    authorizer: Authorizer
    filters: FilterChain
    redact_paths: tuple[tuple[str, ...], ...]
    upstream_target: str
    tokens: TokenExchanger | None


def check_egress(config: ShimConfig) -> None:
    """Refuse filter URLs and a remote upstream that name refused literal addresses."""
    allowed = config.egress.allowed_networks
    for webhook in config.filters:
        check_url(webhook.url, allowed)
    if not config.upstream_is_local:
        check_url(config.upstream.url, allowed)
    if config.token_exchange is not None:
        check_url(config.token_exchange.token_endpoint, allowed)


def build_runtime(config: ShimConfig, metrics: ShimMetrics, used_ids: UsedIds) -> Runtime:
    """Compile a configuration; raises ValueError (with the reason) when it cannot be used.
    `used_ids` is the process's memory of assertions already accepted, kept across reloads."""
    try:
        check_egress(config)
    except RefusedAddressError as exc:
        raise ValueError(str(exc)) from None
    config = with_secret_headers(config)
    server = config.server
    return Runtime(
        config=config,
        verifier=AssertionVerifier(
            config.identity.jwks,
            issuer=config.identity.issuer,
            audience=config.audience,
            max_lifetime=config.identity.max_lifetime_seconds,
            leeway=config.identity.leeway_seconds,
            used=used_ids,
        ),
        authorizer=PolicyAuthorizer(
            config.policies,
            ServerRef(server.namespace, server.name, server.labels, server.catalog_entry),
            config.tools.allow,
            config.tools.deny,
        ),
        filters=FilterChain(config.filters, metrics),
        redact_paths=tuple(parse_path(path) for path in config.audit.redact),
        upstream_target=_target_of(config.upstream.url),
        tokens=TokenExchanger(config.token_exchange) if config.token_exchange else None,
    )


def _target_of(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


@dataclass
class ShimState:
    """Process-lifetime state shared by the handlers."""

    runtime: Runtime
    used_ids: UsedIds
    http: aiohttp.ClientSession
    egress_http: aiohttp.ClientSession
    shipper: AuditShipper
    metrics: ShimMetrics
    owners: SessionOwners = field(default_factory=SessionOwners)
    backlog: Backlog = field(default_factory=Backlog)
    ids: RandomIds = field(default_factory=RandomIds)
    """Request and audit event ids."""

    extra: dict[str, Any] = field(default_factory=dict)
    pools: dict[tuple[str, bool, int, float], OriginPool] = field(default_factory=dict)
    _current_pool: tuple[Runtime, OriginPool] | None = None

    def upstream_pool(self) -> OriginPool:
        """The keep-alive pool for the configured upstream, whose addresses are checked
        against the egress rules unless it is this pod's own server. A reload that changes the
        upstream gets a new pool; the old one serves its requests in flight until shutdown."""
        current = self._current_pool
        if current is not None and current[0] is self.runtime:
            return current[1]
        config = self.runtime.config
        upstream = config.upstream
        local = config.upstream_is_local
        key = (upstream.url, local, upstream.max_connections, upstream.connect_timeout_seconds)
        pool = self.pools.get(key)
        if pool is None:
            resolver = None if local else GuardedResolver(self._allowed_networks)
            pool = OriginPool(
                upstream.url,
                max_connections=upstream.max_connections,
                connect_timeout=upstream.connect_timeout_seconds,
                resolver=resolver,
            )
            self.pools[key] = pool
        self._current_pool = (self.runtime, pool)
        return pool

    def _allowed_networks(self) -> Sequence[Network]:
        return self.runtime.config.egress.allowed_networks

    async def close_pools(self) -> None:
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()
