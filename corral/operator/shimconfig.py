"""The shim configuration the operator renders for one workload, and which policies target it.

Rule: pure. The output is the documented file format (docs/shim.md, camelCase JSON), built as
plain data: processes are independent, so the operator does not import `corral.shim`; tests
parse every rendering with `corral.shim.config`. The configuration carries only what the shim
needs (identity keys, policies, tool subset, filters, token exchange, audit); credentials appear
as file paths of Secrets mounted into the shim alone. Problems the format cannot express are
returned for the ConfigValid condition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.api.common import KeyRef
from corral.api.policies import AccessPolicy
from corral.api.policy import validate_policy
from corral.api.resolve import EffectiveServer
from corral.api.servers import MCPServerSpec
from corral.operator.settings import ADMIN_PORT, BRIDGE_PORT, SHIM_PORT, OperatorSettings

FILTER_SECRETS_DIR = Path("/var/run/corral/filters")
AUDIT_TOKEN_DIR = Path("/var/run/corral/audit")
AUDIT_TOKEN_KEY = "token"
FILTER_SECRET_KEY = "hmacKey"
SPOOL_DIR = Path("/var/spool/corral")
TOKEN_EXCHANGE_DIR = Path("/var/run/corral/token-exchange")
TOKEN_EXCHANGE_KEYS = ("clientId", "clientSecret")
UPSTREAM_HEADERS_DIR = Path("/var/run/corral/upstream-headers")


@dataclass(frozen=True)
class Target:
    """What an AccessPolicy's targets are matched against."""

    namespace: str
    server: str
    labels: Mapping[str, str]
    catalog_entry: str | None


@dataclass(frozen=True)
class Workload:
    """One thing that runs: a shared MCPServer, or one user's MCPServerInstance of it.

    `server` names the MCPServer in both cases: assertions, policies and audit refer to it.
    """

    namespace: str
    server: str
    labels: Mapping[str, str]
    catalog_entry: str | None
    spec: MCPServerSpec
    effective: EffectiveServer
    instance: str | None = None
    owner: str | None = None

    @property
    def target(self) -> Target:
        """The server as policies see it."""
        return Target(self.namespace, self.server, self.labels, self.catalog_entry)

    @property
    def name(self) -> str:
        """Name of the Kubernetes objects built for it."""
        return self.instance or self.server


@dataclass(frozen=True)
class Rendered:
    """The shim configuration and the problems found rendering it."""

    config: dict[str, Any] | None
    problems: tuple[str, ...] = field(default=())


def targets(policy: AccessPolicy, target: Target) -> bool:
    """Whether `policy` applies to the server (same namespace; by name, selector or catalog
    entry)."""
    if policy.metadata.namespace != target.namespace:
        return False
    wanted = policy.spec.targets
    if target.server in (wanted.servers or ()):
        return True
    if target.catalog_entry is not None and target.catalog_entry in (wanted.catalog_entries or ()):
        return True
    selector = wanted.server_selector
    return selector is not None and selector.matches(dict(target.labels))


def policies_for(policies: Iterable[AccessPolicy], workload: Workload) -> list[AccessPolicy]:
    """The valid policies targeting the workload, by name (invalid ones are left out: default
    deny means a broken policy grants nothing)."""
    chosen = [p for p in policies if targets(p, workload.target) and not validate_policy(p)]
    return sorted(chosen, key=lambda p: p.metadata.name or "")


def upstream_url(effective: EffectiveServer) -> str:
    """Where the shim forwards: the server container, the bridge, or the remote URL."""
    runtime = effective.runtime
    if runtime.remote is not None:
        return runtime.remote.url
    if runtime.container is not None:
        return f"http://127.0.0.1:{runtime.container.port}{runtime.container.path}"
    return f"http://127.0.0.1:{BRIDGE_PORT}/mcp"


def render_shim_config(
    workload: Workload, policies: Iterable[AccessPolicy], settings: OperatorSettings
) -> Rendered:
    """The shim configuration of `workload`, or None with the problems that prevent it."""
    problems = list(_port_problems(workload.effective))
    headers = _literal_headers(workload.effective)
    filters = _filters(workload.spec, problems)
    if not settings.gateway.jwks:
        problems.append(
            "the operator has no gateway JWKS: start it with --gateway-jwks-file so shims can "
            "verify identity assertions"
        )
    if problems:
        return Rendered(None, tuple(problems))
    audit = workload.effective.audit
    config: dict[str, Any] = {
        "server": {
            "namespace": workload.namespace,
            "name": workload.server,
            "labels": dict(workload.labels),
            **({"catalogEntry": workload.catalog_entry} if workload.catalog_entry else {}),
        },
        "listen": {"host": "0.0.0.0", "port": SHIM_PORT},
        "admin": {"host": "0.0.0.0", "port": ADMIN_PORT},
        "path": "/mcp",
        "upstream": {
            "url": upstream_url(workload.effective),
            "headers": headers,
            "secretHeaders": {
                name: {"file": str(UPSTREAM_HEADERS_DIR / header_file(index))}
                for index, name, _ in secret_headers(workload.effective)
            },
        },
        "identity": {"issuer": settings.gateway.issuer, "jwks": list(settings.gateway.jwks)},
        "policies": [p.wire() for p in policies_for(policies, workload)],
        "tools": _tools(workload.effective),
        "filters": filters,
        "audit": {
            "payloads": audit.payloads,
            "redact": list(audit.redact or ()),
            "sink": _sink(settings),
        },
    }
    exchange = _token_exchange(workload.spec)
    if exchange is not None:
        config["tokenExchange"] = exchange
    return Rendered(config)


def _port_problems(effective: EffectiveServer) -> Iterable[str]:
    container = effective.runtime.container
    if container is not None and container.port in (SHIM_PORT, ADMIN_PORT):
        yield (
            f"runtime.container.port {container.port} is taken by the shim "
            f"({SHIM_PORT} and {ADMIN_PORT} are reserved): choose another port"
        )


def _literal_headers(effective: EffectiveServer) -> dict[str, str]:
    remote = effective.runtime.remote
    headers = (remote.headers or ()) if remote is not None else ()
    return {h.name: h.value for h in headers if h.value is not None}


def secret_headers(effective: EffectiveServer) -> list[tuple[int, str, KeyRef]]:
    """The remote headers taken from Secrets: (index, header name, Secret key)."""
    remote = effective.runtime.remote
    headers = (remote.headers or ()) if remote is not None else ()
    return [
        (index, h.name, h.secret_key_ref)
        for index, h in enumerate(headers)
        if h.secret_key_ref is not None
    ]


def header_file(index: int) -> str:
    """File name of the secret header at `index` under UPSTREAM_HEADERS_DIR."""
    return f"header-{index}"


def _filters(spec: MCPServerSpec, problems: list[str]) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = []
    for item in spec.filters or ():
        if item.secret_ref is None:
            problems.append(
                f"filter {item.name!r} has no secretRef: filter calls are signed, so name a "
                f"Secret with key {FILTER_SECRET_KEY!r}"
            )
            continue
        secret = FILTER_SECRETS_DIR / item.name / FILTER_SECRET_KEY
        config: dict[str, Any] = {
            "name": item.name,
            "url": item.url,
            "secret": {"file": str(secret)},
            "phase": item.phase,
            "methods": list(item.methods),
            "mutate": item.mutate,
            "failurePolicy": item.failure_policy,
            "timeoutSeconds": float(item.timeout_seconds),
        }
        if item.tools:
            config["tools"] = list(item.tools)
        configs.append(config)
    return configs


def _token_exchange(spec: MCPServerSpec) -> dict[str, Any] | None:
    exchange = spec.token_exchange
    if exchange is None:
        return None
    config: dict[str, Any] = {
        "tokenEndpoint": exchange.token_endpoint,
        "clientId": {"file": str(TOKEN_EXCHANGE_DIR / "clientId")},
        "clientSecret": {"file": str(TOKEN_EXCHANGE_DIR / "clientSecret")},
        "scopes": list(exchange.scopes or ()),
        "inject": {"header": exchange.inject.header, "prefix": exchange.inject.prefix},
    }
    if exchange.audience is not None:
        config["audience"] = exchange.audience
    if exchange.resource is not None:
        config["resource"] = exchange.resource
    return config


def _tools(effective: EffectiveServer) -> dict[str, list[str]]:
    subset = effective.tools
    if subset is None:
        return {}
    tools = {"allow": list(subset.allow or ()), "deny": list(subset.deny or ())}
    return {key: value for key, value in tools.items() if value}


def _sink(settings: OperatorSettings) -> dict[str, Any]:
    gateway = settings.gateway
    if gateway.audit_url is None:
        return {"kind": "stdout"}
    sink: dict[str, Any] = {"kind": "http", "url": gateway.audit_url, "spoolDir": str(SPOOL_DIR)}
    if gateway.audit_token_secret:
        sink["token"] = {"file": str(AUDIT_TOKEN_DIR / AUDIT_TOKEN_KEY)}
    return sink
