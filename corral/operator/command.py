"""`corral operator`: run the Kubernetes operator (flags or CORRAL_OPERATOR_* variables)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from corral.common.log import setup_logging
from corral.operator.running import run
from corral.operator.settings import (
    GatewaySettings,
    ImageSettings,
    OperatorSettings,
    PeeringSettings,
    ServeSettings,
    SettingsError,
    WatchSettings,
    load_jwks,
    parse_labels,
)

_ENV = "CORRAL_OPERATOR_"
FC = TypeVar("FC", bound=Callable[..., Any])


def _option(name: str, *decls: str, **kwargs: Any) -> Callable[[FC], FC]:
    envvar = _ENV + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, *decls, envvar=envvar, show_envvar=True, **kwargs)


@click.command()
@_option(
    "--namespace", "namespaces", multiple=True, help="Namespace to watch (repeat); all if none."
)
@_option("--shim-image", default=ImageSettings.shim, show_default=True)
@_option(
    "--runner-image",
    default=ImageSettings.runner,
    show_default=True,
    help="Image for npx/uvx servers.",
)
@_option("--image-pull-policy", default="IfNotPresent", show_default=True)
@_option(
    "--gateway-pod-labels",
    default="app.kubernetes.io/name=corral-gateway",
    show_default=True,
    help="key=value,... of gateway pods (NetworkPolicy ingress).",
)
@_option("--gateway-namespace", default=None, help="Namespace of the gateway pods (any if unset).")
@_option(
    "--gateway-issuer",
    default="https://corral.invalid",
    show_default=True,
    help="Issuer of identity assertions.",
)
@_option(
    "--gateway-jwks-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The gateway's public JWKS (JSON).",
)
@_option(
    "--audit-url",
    default=None,
    help=(
        "The gateway's audit ingest, http://GATEWAY/api/audit/ingest (unset: shims log to stdout)."
    ),
)
@_option(
    "--audit-token-secret",
    default=None,
    help="Secret (key `token`) in each namespace for the audit sink.",
)
@_option("--peering-name", default="corral-operator", show_default=True)
@_option("--standalone", is_flag=True, help="No peering: run even if other replicas are active.")
@_option(
    "--priority", type=int, default=0, help="Peering priority (0: random, so replicas differ)."
)
@_option("--idle-check-seconds", type=float, default=30.0, show_default=True)
@_option(
    "--liveness",
    default="http://0.0.0.0:8081/healthz",
    show_default=True,
    help="kopf liveness endpoint URL ('' to disable).",
)
@_option("--metrics-host", default="0.0.0.0", show_default=True)
@_option(
    "--metrics-port",
    type=int,
    default=8082,
    show_default=True,
    help="Port of /metrics (0 disables).",
)
@_option("--log-level", default="info", show_default=True)
@_option("--log-json", is_flag=True)
def operator(
    namespaces: tuple[str, ...],
    shim_image: str,
    runner_image: str,
    image_pull_policy: str,
    gateway_pod_labels: str,
    gateway_namespace: str | None,
    gateway_issuer: str,
    gateway_jwks_file: Path | None,
    audit_url: str | None,
    audit_token_secret: str | None,
    peering_name: str,
    standalone: bool,
    priority: int,
    idle_check_seconds: float,
    liveness: str,
    metrics_host: str,
    metrics_port: int,
    log_level: str,
    log_json: bool,
) -> None:
    """Run the operator: MCPServers become hardened pods with a shim sidecar."""
    try:
        settings = OperatorSettings(
            watch=WatchSettings(namespaces=namespaces, idle_check_seconds=idle_check_seconds),
            images=ImageSettings(
                shim=shim_image, runner=runner_image, pull_policy=image_pull_policy
            ),
            gateway=GatewaySettings(
                pod_labels=parse_labels(gateway_pod_labels, setting="--gateway-pod-labels"),
                namespace=gateway_namespace,
                issuer=gateway_issuer,
                jwks=load_jwks(gateway_jwks_file) if gateway_jwks_file else (),
                audit_url=audit_url,
                audit_token_secret=audit_token_secret,
            ),
            peering=PeeringSettings(
                name=peering_name,
                standalone=standalone,
                priority=priority or secrets.randbelow(2**31 - 1) + 1,
            ),
            serve=ServeSettings(
                liveness_endpoint=liveness or None,
                metrics_host=metrics_host,
                metrics_port=metrics_port or None,
            ),
        )
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging(log_level, json_lines=log_json)
    asyncio.run(run(settings))
