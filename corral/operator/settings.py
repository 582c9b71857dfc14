"""The operator's settings: grouped, frozen dataclasses filled from flags and environment.

Rule: plain data. `corral.operator.command` maps flags (and `CORRAL_OPERATOR_*` variables) onto
these; builders and handlers read them and never consult the environment themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHIM_PORT = 8484
ADMIN_PORT = 9494
BRIDGE_PORT = 8000


@dataclass(frozen=True)
class WatchSettings:
    """What the operator watches and how often it re-checks idleness."""

    namespaces: tuple[str, ...] = ()
    idle_check_seconds: float = 30.0

    @property
    def clusterwide(self) -> bool:
        """Watch every namespace (no namespace given)."""
        return not self.namespaces


@dataclass(frozen=True)
class ImageSettings:
    """Images the operator puts into server pods."""

    shim: str = "ghcr.io/corral-dev/corral:latest"
    runner: str = "ghcr.io/corral-dev/corral-runner:latest"
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class GatewaySettings:
    """Who may reach server pods, and how shims verify and report to the gateway."""

    pod_labels: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "corral-gateway"}
    )
    namespace: str | None = None
    issuer: str = "https://corral.invalid"
    jwks: tuple[dict[str, Any], ...] = ()
    audit_url: str | None = None
    audit_token_secret: str | None = None


@dataclass(frozen=True)
class ResourceSettings:
    """Default CPU and memory for the shim and for servers that set none."""

    shim: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )
    server: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        }
    )


@dataclass(frozen=True)
class PeeringSettings:
    """kopf peering: replicas sharing a peering name keep one active (the highest priority)."""

    name: str = "corral-operator"
    standalone: bool = False
    priority: int = 0


@dataclass(frozen=True)
class ServeSettings:
    """The operator's own endpoints."""

    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = 8082


@dataclass(frozen=True)
class OperatorSettings:
    """Every setting, grouped."""

    watch: WatchSettings = field(default_factory=WatchSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    peering: PeeringSettings = field(default_factory=PeeringSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)


class SettingsError(ValueError):
    """A setting is malformed; the message names it and says what is expected."""


def parse_labels(text: str, *, setting: str) -> dict[str, str]:
    """`a=b,c=d` as a dict."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise SettingsError(f"{setting}: {part!r} is not key=value (example: app=gateway)")
        labels[key] = value
    return labels


def load_jwks(path: Path) -> tuple[dict[str, Any], ...]:
    """Public keys from a JWKS file (`{"keys": [...]}`) or a JSON list of JWKs."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"gateway JWKS file {path}: cannot read JSON: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise SettingsError(f"gateway JWKS file {path}: expected {{'keys': [JWK, ...]}}")
    if any("d" in key for key in keys):
        raise SettingsError(f"gateway JWKS file {path}: holds a private key; give public keys")
    return tuple(keys)
