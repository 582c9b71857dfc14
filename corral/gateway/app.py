"""The gateway's aiohttp application: ``create_app(settings)``, one route table, resources in
``cleanup_ctx``.

At startup a replica opens its pool, applies migrations (the advisory lock makes that safe with
many replicas), prepares audit partitions, builds its authenticators and starts listening for
key revocations; a background task keeps partitions and retention current. With
``settings.routing`` the replica also serves the MCP front door (``corral.gateway.routing``),
its RFC 9728 metadata and the JWKS shims trust; servers come from a ``ServerDirectory`` (the
configured static list unless another is given) and instances from an ``InstanceManager``. The
same directory feeds the registry endpoints (``corral.gateway.registry_api``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.api.policy import PolicyIndex
from corral.gateway import apikeys_api, audit_api, registry_api, routing
from corral.gateway.appkeys import (
    API_KEY_AUTHENTICATOR,
    API_RESOURCE,
    AUDIT_WRITER,
    AUTHENTICATOR,
    METRICS,
    POOL,
    SETTINGS,
    SHIM_TOKENS,
)
from corral.gateway.authn import (
    ApiKeyAuthenticator,
    Authenticator,
    StaticAuthenticator,
    first_match,
)
from corral.gateway.bearer import METADATA_PREFIX, TokenDirectory
from corral.gateway.directory import ServerDirectory, StaticDirectory
from corral.gateway.instances import AlwaysRunning, InstanceManager
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.settings import GatewaySettings
from corral.store.audit import AuditWriter, maintain_partitions
from corral.store.errors import TRANSIENT_ERRORS
from corral.store.migrations import apply_migrations
from corral.store.pools import connect, create_pool

log = logging.getLogger(__name__)

REVOCATION_RECONNECT_DELAY = 1.0


JWKS_PATH = "/.well-known/corral/jwks.json"
MCP_PATH = "/mcp/{namespace}/{server}"


def create_app(
    settings: GatewaySettings,
    *,
    directory: ServerDirectory | None = None,
    instances: InstanceManager | None = None,
) -> web.Application:
    """A gateway application; run it with ``web.run_app`` or an ``AppRunner``.

    ``directory`` replaces the static server list of ``settings.routing`` (``corral dev`` and
    the Kubernetes watch cache pass theirs); ``instances`` defaults to ``AlwaysRunning``.
    """
    app = web.Application(client_max_size=settings.max_ingest_bytes)
    app[SETTINGS] = settings
    app[SHIM_TOKENS] = TokenDirectory(settings.shim_tokens)
    app[METRICS] = GatewayMetrics()
    app.cleanup_ctx.extend([_database, _authentication, _maintenance])
    app.router.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_view),
            web.get(METADATA_PREFIX + API_RESOURCE, api_resource_metadata),
            web.post(audit_api.INGEST_PATH, audit_api.ingest_audit),
            web.get("/api/audit", audit_api.query_audit),
            web.get("/api/audit/export", audit_api.export_audit),
            web.post("/api/apikeys", apikeys_api.create_api_key),
            web.get("/api/apikeys", apikeys_api.list_api_keys),
            web.delete("/api/apikeys/{prefix}", apikeys_api.revoke_api_key),
        ]
    )
    if settings.routing is not None:
        _add_mcp_routes(app, settings, directory, instances or AlwaysRunning())
    return app


def _add_mcp_routes(
    app: web.Application,
    settings: GatewaySettings,
    directory: ServerDirectory | None,
    instances: InstanceManager,
) -> None:
    routing_settings = routing.settings_of(app)
    if directory is None:
        policies = routing_settings.policies
        index = None if policies is None else PolicyIndex.build(policies)
        directory = StaticDirectory(
            routing_settings.servers, index, catalog=routing_settings.catalog
        )
    chosen = directory
    app[registry_api.DIRECTORY] = chosen

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with routing.client_session(routing_settings) as http:
            app[routing.ROUTER] = routing.Router(
                routing_settings,
                public_base_url=settings.public_base_url,
                directory=chosen,
                instances=instances,
                http=http,
                authenticator=app[AUTHENTICATOR],
                metrics=app[METRICS],
            )
            yield

    app.cleanup_ctx.append(lifecycle)
    app.router.add_routes(
        [
            web.post(MCP_PATH, routing.mcp_endpoint),
            web.get(MCP_PATH, routing.mcp_endpoint, allow_head=False),
            web.delete(MCP_PATH, routing.mcp_endpoint),
            web.get(METADATA_PREFIX + MCP_PATH, routing.protected_resource_metadata),
            web.get(JWKS_PATH, routing.jwks),
            *registry_api.routes(),
        ]
    )


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers within ``readiness_timeout``."""
    settings = request.app[SETTINGS]
    try:
        async with asyncio.timeout(settings.readiness_timeout):
            async with request.app[POOL].acquire() as connection:
                await connection.fetchval("SELECT 1")
    except TRANSIENT_ERRORS as error:
        return web.json_response(
            {"status": "unavailable", "reason": f"database: {type(error).__name__}"}, status=503
        )
    return web.json_response({"status": "ok"})


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus exposition of this replica's metrics."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def api_resource_metadata(request: web.Request) -> web.Response:
    """RFC 9728 metadata for the ``/api`` resource."""
    base = request.app[SETTINGS].public_base_url.rstrip("/")
    body = {
        "resource": base + API_RESOURCE,
        "bearer_methods_supported": ["header"],
        "resource_name": "Corral gateway API",
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database)
    try:
        async with pool.acquire() as connection:
            report = await apply_migrations(connection)
            await maintain_partitions(connection, settings.audit)
        log.info("database ready; migrations applied now: %s", list(report.applied) or "none")
        app[POOL] = pool
        app[AUDIT_WRITER] = AuditWriter(pool, settings.audit)
        yield
    finally:
        await pool.close()


async def _authentication(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    api_keys = ApiKeyAuthenticator(app[POOL], ttl=settings.api_key_cache_ttl)
    chain: list[Authenticator] = []
    if settings.static_users:
        chain.append(StaticAuthenticator(settings.static_users))
    chain.append(api_keys)
    app[AUTHENTICATOR] = first_match(chain)
    app[API_KEY_AUTHENTICATOR] = api_keys
    task = None
    if settings.listen_for_revocations:
        task = asyncio.create_task(
            _listen_for_revocations(settings, api_keys), name="api-key-revocation-listener"
        )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _listen_for_revocations(
    settings: GatewaySettings, authenticator: ApiKeyAuthenticator
) -> None:
    """Keep a LISTEN connection open, reconnecting when Postgres drops it.

    Notices sent while disconnected are lost, so each (re)connection clears the key cache. Any
    failure of one connection (a restarting Postgres can leave a new connection half-broken, and
    asyncpg then raises its own client errors) is logged and followed by a new connection: the
    listener lasts as long as the gateway.
    """
    while True:
        try:
            connection = await connect(settings.database)
        except TRANSIENT_ERRORS as error:
            log.warning("revocation listener cannot connect, retrying: %s", error)
            await asyncio.sleep(REVOCATION_RECONNECT_DELAY)
            continue
        failed = False
        try:
            await _listen_until_lost(connection, authenticator)
            log.warning("revocation listener lost its connection; reconnecting")
        except Exception as error:
            log.warning("revocation listener failed, reconnecting: %r", error)
            failed = True
        finally:
            authenticator.stop_listening()
            connection.terminate()
        if failed:
            await asyncio.sleep(REVOCATION_RECONNECT_DELAY)


async def _listen_until_lost(
    connection: asyncpg.Connection, authenticator: ApiKeyAuthenticator
) -> None:
    lost = asyncio.Event()
    connection.add_termination_listener(lambda _connection: lost.set())
    await authenticator.listen(connection)
    authenticator.forget_all()
    await lost.wait()


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_maintain_forever(app), name="audit-partition-maintenance")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _maintain_forever(app: web.Application) -> None:
    settings = app[SETTINGS]
    while True:
        await asyncio.sleep(settings.maintenance_interval)
        try:
            async with app[POOL].acquire() as connection:
                dropped = await maintain_partitions(connection, settings.audit)
        except TRANSIENT_ERRORS as error:
            log.warning("audit partition maintenance failed, retrying later: %s", error)
            continue
        if dropped:
            app[AUDIT_WRITER].forget_partitions()
            log.info("dropped audit partitions past retention: %s", ", ".join(dropped))
