"""``corral gateway``: serve the gateway, and the small key tools an operator needs around it.

- ``corral gateway --config PATH``: one replica (uvloop), MCP front door included.
- ``corral gateway jwks --config PATH``: the JWKS the shims trust (``identity.jwks`` in their
  configuration), from the configured signing keys.
- ``corral gateway new-signing-key FILE`` and ``new-session-key``: fresh key material.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import click
import orjson
import uvloop
from aiohttp import web
from kubernetes import config as kube_config
from kubernetes.client import ApiClient

from corral import native
from corral.common import gctune
from corral.common.assertion import generate_signing_key, public_jwk
from corral.common.log import setup_logging
from corral.gateway import routing
from corral.gateway.app import create_app
from corral.gateway.config import (
    ConfigError,
    Discovery,
    GatewayConfig,
    Listen,
    load_config,
    to_settings,
)
from corral.gateway.directory import ServerDirectory
from corral.gateway.instances import InstanceManager
from corral.gateway.kubedirectory import KubernetesDirectory, KubernetesInstances
from corral.gateway.sessions import KEY_BYTES
from corral.gateway.settings import GatewaySettings
from corral.gateway.signing import signing_key_pem

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT = 10.0
SYNC_TIMEOUT = 60.0

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)


def _load(config_path: Path) -> tuple[GatewayConfig, GatewaySettings]:
    try:
        config = load_config(config_path)
        return config, to_settings(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=_CONFIG, help="The gateway config (docs/gateway.md).")
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of plain text.")
@click.pass_context
def gateway(
    context: click.Context, config_path: Path | None, log_level: str, log_json: bool
) -> None:
    """Serve the gateway: authenticate callers and route MCP clients to their servers."""
    if context.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("give --config PATH (see docs/gateway.md)")
    setup_logging(log_level, json_lines=log_json)
    config, settings = _load(config_path)
    uvloop.run(_main(settings, config))


@gateway.command()
@click.option("--config", "config_path", type=_CONFIG, required=True)
def jwks(config_path: Path) -> None:
    """Print the JWKS the shims must trust (public keys only)."""
    _, settings = _load(config_path)
    assert settings.routing is not None
    keys = [public_jwk(key) for key in settings.routing.signing_keys]
    click.echo(orjson.dumps({"keys": keys}, option=orjson.OPT_INDENT_2).decode())


@gateway.command("new-signing-key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def new_signing_key(path: Path) -> None:
    """Write a new P-256 signing key (PEM, mode 0600) to PATH; print its public JWK."""
    key = generate_signing_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(signing_key_pem(key))
    click.echo(orjson.dumps(public_jwk(key)).decode())


@gateway.command("new-session-key")
def new_session_key() -> None:
    """Print a new 32-byte session key (base64) for ``sessions.keys``."""
    click.echo(base64.b64encode(os.urandom(KEY_BYTES)).decode())


async def _main(settings: GatewaySettings, config: GatewayConfig) -> None:
    task = asyncio.create_task(_serve(settings, config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _serve(settings: GatewaySettings, config: GatewayConfig) -> None:
    async with _discovery(config.discovery) as (directory, instances):
        await _run(settings, directory, instances, config.listen)


@contextlib.asynccontextmanager
async def _discovery(
    discovery: Discovery,
) -> AsyncIterator[tuple[ServerDirectory | None, InstanceManager | None]]:
    """Nones for the configured static list; a synced Kubernetes watch cache otherwise."""
    if discovery.kind == "static":
        yield None, None
        return
    if discovery.kubeconfig is not None:
        api = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(discovery.kubeconfig)
        )
    else:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = ApiClient()
    directory = KubernetesDirectory(api, namespace=discovery.namespace)
    directory.start()
    try:
        if not await asyncio.to_thread(directory.wait_synced, SYNC_TIMEOUT):
            raise click.ClickException(
                f"could not list Corral resources within {SYNC_TIMEOUT:g}s: "
                "check the API server address and the gateway's RBAC (get, list, watch)"
            )
        log.info("watching Corral resources in %s", discovery.namespace or "all")
        instances = KubernetesInstances(api, directory)
        try:
            yield directory, instances
        finally:
            await instances.aclose()
    finally:
        await asyncio.to_thread(directory.stop)
        api.close()


async def _run(
    settings: GatewaySettings,
    directory: ServerDirectory | None,
    instances: InstanceManager | None,
    listen: Listen,
) -> None:
    app = create_app(settings, directory=directory, instances=instances)
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    mcp = None
    try:
        await web.TCPSite(runner, listen.host, listen.port).start()
        log.info(
            "gateway %s listening on %s:%d", settings.public_base_url, listen.host, listen.port
        )
        log.info("code: %s", native.describe())
        if listen.mcp_port is not None:
            mcp = routing.mcp_server(app[routing.ROUTER])
            await mcp.start(listen.host, listen.mcp_port)
            log.info("MCP routes also on %s:%d", listen.host, mcp.port)
        log.info("garbage collector: %s", gctune.tune_for_serving())
        await asyncio.Event().wait()
    finally:
        if mcp is not None:
            await mcp.stop()
        await runner.cleanup()
