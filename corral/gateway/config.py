"""The gateway's configuration file (``corral gateway --config PATH``), documented in
docs/gateway.md.

Rule: pydantic models only; camelCase keys, unknown keys are errors, YAML or JSON. Secrets (the
database DSN, signing and session keys, static user and shim tokens) come from files (mounted
Secrets) or, for local use, inline values; they never appear in reprs or logs. ``to_settings``
turns a parsed file into ``GatewaySettings``; every problem is a ``ConfigError`` naming the
field and what to do.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import Field, model_validator

from corral.api.catalog import MCPCatalogEntry
from corral.api.policies import AccessPolicy
from corral.common.configfiles import ConfigModel, SecretSource
from corral.gateway.authn import static_entry
from corral.gateway.directory import ServerEntry
from corral.gateway.sessions import KEY_BYTES
from corral.gateway.settings import GatewaySettings, RoutingSettings
from corral.gateway.shimscope import SCOPE_PATTERN
from corral.gateway.signing import load_signing_key
from corral.store.pools import PoolSettings


class Secret(SecretSource):
    """A secret given inline (``value``, for local use) or read from a file (``file``)."""

    def read(self) -> str:
        try:
            return super().read()
        except OSError as error:
            raise ConfigError(f"cannot read secret file {self.file}: {error}") from None


class Listen(ConfigModel):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    mcp_port: int | None = Field(None, ge=0, le=65535)
    """A second port serving only ``/mcp/{namespace}/{server}``, on a lean HTTP server."""

    @model_validator(mode="after")
    def _ports_differ(self) -> Self:
        if self.mcp_port is not None and self.mcp_port != 0 and self.mcp_port == self.port:
            raise ValueError(f"listen.mcpPort must differ from listen.port ({self.port})")
        return self


class Database(ConfigModel):
    dsn: Secret
    min_size: int = Field(1, ge=0)
    max_size: int = Field(10, ge=1)


class Identity(ConfigModel):
    issuer: str | None = None
    signing_keys: list[Secret] = Field(min_length=1)
    assertion_lifetime_seconds: int = Field(60, ge=1, le=60)


class Sessions(ConfigModel):
    keys: list[Secret] = Field(min_length=1)
    max_age_seconds: float = Field(24 * 3600.0, gt=0)


class Edge(ConfigModel):
    allowed_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(30.0, gt=0)
    rate_per_second: float = Field(50.0, gt=0)
    burst: float = Field(100.0, ge=1)


class Upstream(ConfigModel):
    connect_timeout_seconds: float = Field(10.0, gt=0)
    timeout_seconds: float = Field(300.0, gt=0)
    max_connections: int = Field(1000, ge=1)


class Server(ConfigModel):
    namespace: str
    name: str
    url: str
    tenancy: Literal["shared", "perUser"] = "shared"
    labels: dict[str, str] = Field(default_factory=dict)
    catalog_entry: str | None = None
    startup_timeout_seconds: float = Field(60.0, gt=0)


class Discovery(ConfigModel):
    """Where servers come from: the ``servers`` list, or a watch of the Kubernetes API."""

    kind: Literal["static", "kubernetes"] = "static"
    namespace: str | None = None
    kubeconfig: Path | None = None


class ShimToken(ConfigModel):
    """A shim's audit token and its scope: ``namespace/server`` or ``namespace/*``."""

    token: Secret
    server: str = Field(pattern=SCOPE_PATTERN)


class GatewayConfig(ConfigModel):
    """The whole file."""

    public_base_url: str
    listen: Listen = Field(default_factory=Listen)
    database: Database
    identity: Identity
    sessions: Sessions
    edge: Edge = Field(default_factory=Edge)
    upstream: Upstream = Field(default_factory=Upstream)
    discovery: Discovery = Field(default_factory=Discovery)
    servers: list[Server] = Field(default_factory=list)
    policies: list[AccessPolicy] | None = None
    catalog: list[MCPCatalogEntry] = Field(default_factory=list)
    authorization_servers: list[str] = Field(default_factory=list)
    users: list[dict[str, Any]] = Field(default_factory=list, repr=False)
    shim_tokens: list[ShimToken] = Field(default_factory=list)
    api_key_cache_ttl_seconds: float = Field(5.0, ge=0)


class ConfigError(Exception):
    """The configuration file is missing or invalid; the message says where."""


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the gateway configuration {path}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML or JSON: {error}") from None
    try:
        return GatewayConfig.model_validate(data)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def session_key(text: str, index: int) -> bytes:
    """A session key from base64 (standard or URL-safe, padding optional)."""
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"sessions.keys[{index}] must be {KEY_BYTES} random bytes in base64 "
            "(make one with `corral gateway new-session-key`)"
        )
    return key


def _signing_keys(config: GatewayConfig) -> list[Any]:
    keys = []
    for index, secret in enumerate(config.identity.signing_keys):
        try:
            keys.append(load_signing_key(secret.read().encode()))
        except ValueError as error:
            raise ConfigError(f"identity.signingKeys[{index}]: {error}") from None
    return keys


def to_settings(config: GatewayConfig) -> GatewaySettings:
    """The settings a replica runs with; reads every referenced secret file."""
    edge, upstream = config.edge, config.upstream
    routing = RoutingSettings(
        signing_keys=_signing_keys(config),
        session_keys=[session_key(s.read(), i) for i, s in enumerate(config.sessions.keys)],
        issuer=config.identity.issuer,
        servers=[
            ServerEntry(
                s.namespace,
                s.name,
                s.url,
                s.tenancy,
                s.labels,
                s.catalog_entry,
                s.startup_timeout_seconds,
            )
            for s in config.servers
        ],
        policies=config.policies,
        catalog=tuple(config.catalog),
        allowed_origins=frozenset(edge.allowed_origins),
        max_body_bytes=edge.max_body_bytes,
        body_timeout=edge.body_timeout_seconds,
        connect_timeout=upstream.connect_timeout_seconds,
        upstream_timeout=upstream.timeout_seconds,
        max_connections=upstream.max_connections,
        rate_per_second=edge.rate_per_second,
        rate_burst=edge.burst,
        session_max_age=config.sessions.max_age_seconds,
        assertion_lifetime=config.identity.assertion_lifetime_seconds,
        authorization_servers=tuple(config.authorization_servers),
    )
    try:
        users = dict(static_entry(entry, index) for index, entry in enumerate(config.users))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    database = config.database
    return GatewaySettings(
        database=PoolSettings(
            database.dsn.read(),
            min_size=database.min_size,
            max_size=database.max_size,
            application_name="corral-gateway",
        ),
        public_base_url=config.public_base_url,
        shim_tokens={t.token.read(): t.server for t in config.shim_tokens},
        static_users=users,
        api_key_cache_ttl=config.api_key_cache_ttl_seconds,
        routing=routing,
    )
