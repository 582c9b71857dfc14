"""What the shim derives from its configuration, rebuilt whole on every reload.

Rule: `Runtime` is immutable and swapped atomically; requests in flight keep the one they
started with, and nothing here holds sessions, so a reload never drops one. `ShimState` holds
what lives as long as the process: the upstream client, session owners, audit shipper, metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from corral.api.policy import ServerRef
from corral.common.assertion import AssertionVerifier
from corral.common.egress import RefusedAddressError, check_url
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
    upstream_timeout: aiohttp.ClientTimeout
    stream_timeout: aiohttp.ClientTimeout
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


def build_runtime(config: ShimConfig, metrics: ShimMetrics) -> Runtime:
    """Compile a configuration; raises ValueError (with the reason) when it cannot be used."""
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
        ),
        authorizer=PolicyAuthorizer(
            config.policies,
            ServerRef(server.namespace, server.name, server.labels, server.catalog_entry),
            config.tools.allow,
            config.tools.deny,
        ),
        filters=FilterChain(config.filters, metrics),
        redact_paths=tuple(parse_path(path) for path in config.audit.redact),
        upstream_timeout=aiohttp.ClientTimeout(
            total=None,
            connect=config.upstream.connect_timeout_seconds,
            sock_read=config.upstream.timeout_seconds,
        ),
        stream_timeout=aiohttp.ClientTimeout(
            total=None, connect=config.upstream.connect_timeout_seconds, sock_read=None
        ),
        tokens=TokenExchanger(config.token_exchange) if config.token_exchange else None,
    )


@dataclass
class ShimState:
    """Process-lifetime state shared by the handlers."""

    runtime: Runtime
    http: aiohttp.ClientSession
    egress_http: aiohttp.ClientSession
    shipper: AuditShipper
    metrics: ShimMetrics
    owners: SessionOwners = field(default_factory=SessionOwners)

    def upstream_client(self) -> aiohttp.ClientSession:
        """The pooled client for the upstream: guarded unless it is this pod's own server."""
        return self.http if self.runtime.config.upstream_is_local else self.egress_http

    extra: dict[str, Any] = field(default_factory=dict)
