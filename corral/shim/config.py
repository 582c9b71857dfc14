"""The shim's configuration file: one format (YAML or JSON) for the operator's ConfigMap and
`corral dev`. Documented in docs/shim.md.

Rule: pydantic models only; camelCase keys on the wire, snake_case in Python; unknown keys are
errors. Secrets are read from files (mounted Secrets) or, for local use, given inline; their
values never appear in reprs or logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import (
    Field,
    IPvAnyNetwork,
    model_validator,
)

from corral.api.policies import AccessPolicy
from corral.common.assertion import audience_for
from corral.common.configfiles import ConfigModel, SecretSource
from corral.mcp.jsonrpc import DEFAULT_MAX_BYTES

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ServerIdentity(ConfigModel):
    """The MCPServer this shim fronts."""

    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    catalog_entry: str | None = None


class Listen(ConfigModel):
    """Where a port listens."""

    host: str = "0.0.0.0"
    port: int = Field(ge=0, le=65535)


class Upstream(ConfigModel):
    """The MCP server: on localhost (hosted) or a remote URL."""

    url: str
    timeout_seconds: float = Field(default=300.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    secret_headers: dict[str, SecretSource] = Field(default_factory=dict)
    max_connections: int = Field(default=100, ge=1)


class IdentityConfig(ConfigModel):
    """How to verify the gateway's identity assertions."""

    issuer: str
    jwks: list[dict[str, Any]] = Field(min_length=1)
    max_lifetime_seconds: int = Field(default=60, ge=1, le=60)
    leeway_seconds: int = Field(default=5, ge=0, le=60)


class ToolSubset(ConfigModel):
    """The server's `tools: {allow, deny}` globs."""

    allow: list[str] | None = None
    deny: list[str] | None = None


class FilterConfig(ConfigModel):
    """One webhook filter."""

    name: str
    url: str
    secret: SecretSource
    phase: Literal["request", "response", "both"] = "request"
    methods: list[str] = Field(default_factory=lambda: ["tools/call"])
    tools: list[str] | None = None
    mutate: bool = False
    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class TokenInjection(ConfigModel):
    """Where the exchanged token goes on requests to the server."""

    header: str = "Authorization"
    prefix: str = "Bearer "


class TokenExchangeConfig(ConfigModel):
    """RFC 8693 token exchange for the server's own authorization."""

    token_endpoint: str
    client_id: SecretSource
    client_secret: SecretSource
    audience: str | None = None
    resource: str | None = None
    scopes: list[str] = Field(default_factory=list)
    inject: TokenInjection = Field(default_factory=TokenInjection)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class AuditSink(ConfigModel):
    """Where audit events go: the gateway's ingest endpoint, or stdout as JSON lines."""

    kind: Literal["http", "stdout"] = "stdout"
    url: str | None = None
    token: SecretSource | None = None
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _http_needs_url(self) -> Self:
        if self.kind == "http" and not self.url:
            raise ValueError("an http audit sink needs `url`")
        return self


class AuditConfig(ConfigModel):
    """What audit events carry and where they go."""

    payloads: Literal["none", "metadata", "full"] = "metadata"
    redact: list[str] = Field(default_factory=list)
    sink: AuditSink = Field(default_factory=AuditSink)


class Egress(ConfigModel):
    """Networks that user-configured URLs (filters, a remote upstream) may reach besides public
    addresses; everything private, loopback and link-local is refused otherwise."""

    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)


class Limits(ConfigModel):
    """Request limits."""

    max_message_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1024)


class ShimConfig(ConfigModel):
    """The whole shim configuration."""

    server: ServerIdentity
    listen: Listen = Field(default_factory=lambda: Listen(port=8080))
    admin: Listen = Field(default_factory=lambda: Listen(port=9090))
    path: str = "/mcp"
    upstream: Upstream
    identity: IdentityConfig
    policies: list[AccessPolicy] = Field(default_factory=list)
    tools: ToolSubset = Field(default_factory=ToolSubset)
    filters: Annotated[list[FilterConfig], Field(max_length=32)] = Field(default_factory=list)
    token_exchange: TokenExchangeConfig | None = None
    audit: AuditConfig = Field(default_factory=AuditConfig)
    limits: Limits = Field(default_factory=Limits)
    egress: Egress = Field(default_factory=Egress)
    allowed_origins: list[str] = Field(default_factory=list)
    reload_interval_seconds: float = Field(default=2.0, gt=0)

    @property
    def upstream_is_local(self) -> bool:
        """Whether the upstream is this pod's own server (or bridge) on loopback."""
        return urlsplit(self.upstream.url).hostname in LOCAL_HOSTS

    @property
    def audience(self) -> str:
        """The assertion audience this shim accepts."""
        return audience_for(self.server.namespace, self.server.name)


def with_secret_headers(config: ShimConfig) -> ShimConfig:
    """The configuration with `upstream.secretHeaders` read into `upstream.headers`, when the
    configuration is loaded (at start and on each change of the file); raises ValueError naming
    a header whose file cannot be read."""
    upstream = config.upstream
    if not upstream.secret_headers:
        return config
    headers = dict(upstream.headers)
    for name, source in upstream.secret_headers.items():
        try:
            headers[name] = source.read()
        except OSError as exc:
            raise ValueError(f"cannot read upstream header {name!r}: {exc}") from None
    resolved = upstream.model_copy(update={"headers": headers, "secret_headers": {}})
    return config.model_copy(update={"upstream": resolved})


class ConfigError(Exception):
    """The configuration file is missing or invalid; the message says where."""


def parse_config(text: str | bytes, *, source: str = "config") -> ShimConfig:
    """Parse YAML or JSON text into a `ShimConfig`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    try:
        return ShimConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: Path) -> ShimConfig:
    """Read and parse the configuration file."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the shim configuration {path}: {exc}") from None
    return parse_config(text, source=str(path))


def dump_config(config: ShimConfig) -> bytes:
    """The configuration as JSON (camelCase), secrets included, for writing a config file."""
    data = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    for index, filter_config in enumerate(config.filters):
        if filter_config.secret.value is not None:
            data["filters"][index]["secret"]["value"] = filter_config.secret.read()
    for name, source in config.upstream.secret_headers.items():
        if source.value is not None:
            data["upstream"]["secretHeaders"][name]["value"] = source.read()
    token = config.audit.sink.token
    if token is not None and token.value is not None:
        data["audit"]["sink"]["token"]["value"] = token.read()
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
