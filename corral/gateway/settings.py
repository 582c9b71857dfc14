"""Gateway settings: one frozen, grouped value for ``create_app``; secrets stay out of reprs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.gateway.authn import Principal
from corral.store.audit import AuditSettings
from corral.store.pools import PoolSettings


@dataclass(frozen=True)
class Roles:
    """Groups whose members administer keys or read audit bodies."""

    admin_groups: frozenset[str] = frozenset({"corral-admins"})
    auditor_groups: frozenset[str] = frozenset({"corral-auditors"})


@dataclass(frozen=True)
class GatewaySettings:
    """Everything a gateway replica needs to start.

    ``shim_tokens`` maps each shim's bearer token to the ``namespace/server`` it audits; a shim
    may only post events about its own server. ``static_users`` maps tokens to principals for
    ``corral dev`` (empty in production).
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
