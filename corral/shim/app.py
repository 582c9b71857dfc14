"""The shim's applications: the MCP endpoint, the admin endpoints, and configuration reload.

Rule: `serve(config_path)` runs the MCP endpoint on the lean HTTP server (corral.common.httpserver)
and the admin endpoints on aiohttp, over one `ShimState` (`running_state`) whose `runtime` is
replaced when the file changes (checked every `reloadIntervalSeconds`). A file that fails to
parse or compile is logged and counted, and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.common import gctune
from corral.common.assertion import UsedIds
from corral.common.egress import GuardedResolver
from corral.common.httpserver import LeanServer, Reply, Request, StreamReply
from corral.shim import proxy
from corral.shim.config import ConfigError, ShimConfig, load_config
from corral.shim.metrics import ShimMetrics
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
            runtime = build_runtime(load_config(self._path), metrics, self._state.used_ids)
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


@contextlib.asynccontextmanager
async def running_state(config_path: Path) -> AsyncIterator[ShimState]:
    """The shim's process state, with its clients, audit shipper and configuration watcher."""
    text = await asyncio.to_thread(config_path.read_bytes)
    config = load_config(config_path)
    metrics = ShimMetrics()
    used_ids = UsedIds()
    runtime = build_runtime(config, metrics, used_ids)
    _log_problems(runtime)
    http = _client(config)
    holder: list[ShimState] = []
    egress_http = _client(
        config, GuardedResolver(lambda: holder[0].runtime.config.egress.allowed_networks)
    )
    shipper = AuditShipper(config.audit.sink, metrics, http)
    state = ShimState(
        runtime=runtime,
        used_ids=used_ids,
        http=http,
        egress_http=egress_http,
        shipper=shipper,
        metrics=metrics,
    )
    holder.append(state)
    shipper.start()
    watcher = ConfigWatcher(config_path, state, hashlib.sha256(text).digest())
    task = asyncio.create_task(watcher.run(), name="config watcher")
    try:
        yield state
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.backlog.run()
        await shipper.stop()
        await state.close_pools()
        await http.close()
        await egress_http.close()


def mcp_server(state: ShimState) -> LeanServer:
    """The MCP endpoint's server: lean, since every message of the pod crosses it. The handler
    is the compiled ``proxy.handle`` itself (a partial), not a coroutine of this module's."""
    handler: Callable[[Request], Awaitable[Reply | StreamReply]] = functools.partial(
        proxy.handle, state
    )
    return LeanServer(handler, max_body=lambda: state.runtime.config.limits.max_message_bytes)


def admin_app(state: ShimState) -> web.Application:
    """Health, readiness and metrics, on their own port."""
    admin = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        problem = await upstream_problem(state.runtime.config)
        if problem is not None:
            return web.json_response({"status": "waiting", "reason": problem}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_view(request: web.Request) -> web.Response:
        state.backlog.run()  # count the calls already answered
        body = generate_latest(state.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics_view)
    return admin


async def serve(config_path: Path) -> None:
    """Run the MCP endpoint and the admin endpoints until cancelled."""
    async with running_state(config_path) as state:
        config = state.runtime.config
        server = mcp_server(state)
        runner = web.AppRunner(admin_app(state), access_log=None)
        await runner.setup()
        try:
            await server.start(config.listen.host, config.listen.port)
            await web.TCPSite(runner, config.admin.host, config.admin.port).start()
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
            log.info("garbage collector: %s", gctune.tune_for_serving())
            await asyncio.Event().wait()
        finally:
            await server.stop()
            await runner.cleanup()
