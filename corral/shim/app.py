"""The shim's applications: the MCP endpoint, the admin endpoints, and configuration reload.

Rule: `create_apps(config_path)` builds both aiohttp applications; one `ShimState` is shared and
its `runtime` is replaced when the file changes (checked every `reloadIntervalSeconds`). A file
that fails to parse or compile is logged and counted, and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.common.egress import GuardedResolver
from corral.shim.config import ConfigError, ShimConfig, load_config
from corral.shim.metrics import ShimMetrics
from corral.shim.proxy import STATE, add_routes
from corral.shim.runtime import Runtime, ShimState, build_runtime
from corral.shim.shipper import AuditShipper

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Reloads the configuration file when its content changes."""

    def __init__(self, path: Path, state: ShimState, digest: bytes) -> None:
        self._path = path
        self._state = state
        self._digest = digest

    def check(self) -> bool:
        """Reload if the file changed; True when a new configuration took effect."""
        try:
            text = self._path.read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s; keeping the running configuration", self._path, exc)
            return False
        digest = hashlib.sha256(text).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        metrics = self._state.metrics
        try:
            runtime = build_runtime(load_config(self._path), metrics)
        except (ConfigError, ValueError) as exc:
            metrics.config_reloads.labels("error").inc()
            log.error("configuration change refused, keeping the running one: %s", exc)
            return False
        _log_problems(runtime)
        self._state.runtime = runtime
        metrics.config_reloads.labels("ok").inc()
        log.info("configuration reloaded from %s", self._path)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._state.runtime.config.reload_interval_seconds)
            self.check()


async def upstream_problem(config: ShimConfig) -> str | None:
    """Why a local upstream cannot take connections yet (None when it can, or is remote)."""
    if not config.upstream_is_local:
        return None
    parts = urlsplit(config.upstream.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except (OSError, TimeoutError) as exc:
        return f"the MCP server at {parts.hostname}:{port} does not accept connections: {exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _log_problems(runtime: Runtime) -> None:
    for problem in getattr(runtime.authorizer, "problems", ()):
        log.warning("policy problem (the rule fails closed): %s", problem)


def _client(config: ShimConfig, resolver: GuardedResolver | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=config.upstream.max_connections, resolver=resolver)
    timeout = aiohttp.ClientTimeout(total=None, connect=config.upstream.connect_timeout_seconds)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def create_apps(config_path: Path) -> tuple[web.Application, web.Application]:
    """The MCP application and the admin application, sharing one state."""
    text = config_path.read_bytes()
    config = load_config(config_path)
    metrics = ShimMetrics()
    runtime = build_runtime(config, metrics)
    _log_problems(runtime)
    app = web.Application(client_max_size=config.limits.max_message_bytes + 1)
    admin = web.Application()
    holder: dict[str, ShimState] = {}

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        http = _client(config)
        egress_http = _client(
            config, GuardedResolver(lambda: state.runtime.config.egress.allowed_networks)
        )
        shipper = AuditShipper(config.audit.sink, metrics, http)
        state = ShimState(
            runtime=runtime, http=http, egress_http=egress_http, shipper=shipper, metrics=metrics
        )
        app[STATE] = state
        holder["state"] = state
        shipper.start()
        watcher = ConfigWatcher(config_path, state, hashlib.sha256(text).digest())
        task = asyncio.create_task(watcher.run(), name="config watcher")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await shipper.stop()
        await state.close_pools()
        await http.close()
        await egress_http.close()

    app.cleanup_ctx.append(lifecycle)
    add_routes(app, config.path)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if "state" not in holder:
            return web.json_response({"status": "starting"}, status=503)
        problem = await upstream_problem(holder["state"].runtime.config)
        if problem is not None:
            return web.json_response({"status": "waiting", "reason": problem}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics_view)
    return app, admin


async def serve(config_path: Path) -> None:
    """Run both applications until cancelled."""
    config = load_config(config_path)
    app, admin = create_apps(config_path)
    runners = [
        web.AppRunner(app, access_log=None, handler_cancellation=True),
        web.AppRunner(admin, access_log=None),
    ]
    for runner in runners:
        await runner.setup()
    sites = [
        web.TCPSite(runners[0], config.listen.host, config.listen.port),
        web.TCPSite(runners[1], config.admin.host, config.admin.port),
    ]
    try:
        for site in sites:
            await site.start()
        log.info(
            "shim for %s/%s: MCP on %s:%d%s, admin on %s:%d, upstream %s",
            config.server.namespace,
            config.server.name,
            config.listen.host,
            config.listen.port,
            config.path,
            config.admin.host,
            config.admin.port,
            config.upstream.url,
        )
        await asyncio.Event().wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
