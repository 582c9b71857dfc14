"""The whole platform on one machine: embedded Postgres, the gateway, and every server.

Rule: the runtime holds the running state and applies desired state to it. The desired state is
computed by pure functions (`load_manifests`, `plan_servers`) from the manifest directory; the
runtime starts, updates and stops `LocalServer`s to match and swaps the gateway's directory. A
manifest directory that does not load is reported and leaves the last good state running.
The gateway runs in this process (`create_app` with a `DevDirectory`); shims and servers run as
child processes, as in a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from corral.api.catalog import MCPCatalogEntry
from corral.api.policy import Caller, Decision, PolicyIndex
from corral.common.assertion import public_jwk
from corral.dev import output, secrets
from corral.dev.manifests import ManifestError, Manifests, load_manifests, manifest_files
from corral.dev.plans import Environment, PortBook, ServerPlan, plan_servers
from corral.dev.postgres import RunningPostgres, embedded_postgres
from corral.dev.servers import LocalServer
from corral.dev.tokens import ShimTokens, shim_token
from corral.gateway.app import create_app
from corral.gateway.appkeys import SHIM_TOKENS
from corral.gateway.directory import UNKNOWN_STATUS, ServerEntry, ServerStatus, StaticDirectory
from corral.gateway.settings import GatewaySettings, RoutingSettings
from corral.store.migrations import apply_migrations
from corral.store.pools import PoolSettings

POLL_SECONDS = 0.5
SHUTDOWN_TIMEOUT = 5.0
PRINT_PATIENCE = 30.0


@dataclass(frozen=True)
class DevOptions:
    """What `corral dev` was asked to do."""

    manifest_dir: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    python_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @property
    def base_url(self) -> str:
        return f"http://{self.local_host}:{self.port}"

    @property
    def local_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "localhost", "::") else self.host


class DevDirectory:
    """The gateway's server directory, replaced whole on every reload; a server's status comes
    live from ``status`` (the runtime's view of its local processes)."""

    def __init__(
        self, status: Callable[[ServerEntry], ServerStatus] = lambda _server: UNKNOWN_STATUS
    ) -> None:
        self._current = StaticDirectory([], PolicyIndex.build([]))
        self._status = status

    def replace(
        self,
        servers: Iterable[ServerEntry],
        policies: PolicyIndex,
        catalog: Iterable[MCPCatalogEntry] = (),
    ) -> None:
        self._current = StaticDirectory(servers, policies, catalog=catalog)

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._current.lookup(namespace, name)

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        return self._current.may_access(caller, server)

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        return self._current.owns_instance(server, instance)

    def servers(self) -> Sequence[ServerEntry]:
        return self._current.servers()

    def status(self, server: ServerEntry) -> ServerStatus:
        return self._status(server)

    def catalog(self) -> Sequence[MCPCatalogEntry]:
        return self._current.catalog()


def local_status(server: LocalServer | None) -> ServerStatus:
    """A local server's listing status: its state (``ready``, ``starting``, ...) and the tool
    count its probe found."""
    if server is None:
        return UNKNOWN_STATUS
    return ServerStatus(ready=server.state == "ready", reason=server.state, tool_count=server.tools)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DevRuntime:
    """Runs until cancelled; then stops every child and Postgres."""

    def __init__(self, options: DevOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.servers: dict[tuple[str, str], LocalServer] = {}
        self.directory = DevDirectory(
            lambda entry: local_status(self.servers.get((entry.namespace, entry.name)))
        )
        self.ports = PortBook(free_port)
        self.key = ""
        self._snapshot: dict[Path, tuple[int, int]] = {}
        self._table_dirty = asyncio.Event()

    async def run(self) -> None:
        data_dir = self.options.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signing = secrets.signing_key(data_dir)
        token_secret = secrets.shim_token_secret(data_dir)
        tokens = ShimTokens(token_secret)
        environment = Environment(
            issuer=self.options.base_url,
            jwks=(public_jwk(signing),),
            audit_url=f"{self.options.base_url}/api/audit/ingest",
            shim_token=lambda route: shim_token(token_secret, route),
            spool_dir=data_dir / "spool",
            python_bin=self.options.python_bin,
        )
        async with aiohttp.ClientSession() as http:
            try:
                await self._apply(self._load() or Manifests(), environment, tokens, http)
                self.say(f"starting embedded Postgres (data in {data_dir})")
                async with embedded_postgres(data_dir) as postgres:
                    self.key = await self._prepare_database(postgres)
                    settings = GatewaySettings(
                        database=PoolSettings(postgres.dsn(), application_name="corral-dev"),
                        public_base_url=self.options.base_url,
                        routing=RoutingSettings(
                            signing_keys=[signing],
                            session_keys=[secrets.session_key(data_dir)],
                            issuer=self.options.base_url,
                        ),
                    )
                    await self._serve_gateway(settings, tokens, environment, http)
            finally:
                await self._stop_all()

    async def _serve_gateway(
        self,
        settings: GatewaySettings,
        tokens: ShimTokens,
        environment: Environment,
        http: aiohttp.ClientSession,
    ) -> None:
        app = create_app(settings, directory=self.directory)
        app[SHIM_TOKENS] = tokens
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.host, self.options.port).start()
            self.say(f"gateway listening on {self.options.base_url}")
            await self._watch(environment, tokens, http)
        finally:
            await self._stop_all()
            await runner.cleanup()

    async def _prepare_database(self, postgres: RunningPostgres) -> str:
        connection = await asyncpg.connect(postgres.dsn())
        try:
            await apply_migrations(connection)
            key, created = await secrets.admin_key(connection, self.options.data_dir)
        finally:
            await connection.close()
        where = self.options.data_dir / secrets.ADMIN_KEY_FILE
        self.say(("created" if created else "using") + f" the local admin's API key ({where})")
        return key

    async def _watch(
        self, environment: Environment, tokens: ShimTokens, http: aiohttp.ClientSession
    ) -> None:
        printer = asyncio.create_task(self._print_when_ready(), name="dev status printer")
        try:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                if not self._files_changed():
                    continue
                manifests = self._load()
                if manifests is not None:
                    await self._apply(manifests, environment, tokens, http)
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer

    def _files_changed(self) -> bool:
        snapshot = self._stat()
        changed = snapshot != self._snapshot
        self._snapshot = snapshot
        return changed

    def _stat(self) -> dict[Path, tuple[int, int]]:
        try:
            files = manifest_files(self.options.manifest_dir)
        except ManifestError:
            return {}
        snapshot = {}
        for path in files:
            with contextlib.suppress(OSError):
                status = path.stat()
                snapshot[path] = (status.st_mtime_ns, status.st_size)
        return snapshot

    def _load(self) -> Manifests | None:
        self._snapshot = self._stat()
        try:
            return load_manifests(self.options.manifest_dir)
        except ManifestError as error:
            self.say(f"manifests not applied (the last good state keeps running):\n{error}")
            return None

    async def _apply(
        self,
        manifests: Manifests,
        environment: Environment,
        tokens: ShimTokens,
        http: aiohttp.ClientSession,
    ) -> None:
        plans = {p.key: p for p in plan_servers(manifests, self.ports, environment)}
        for key in [k for k in self.servers if k not in plans]:
            self.say(f"removing {key[0]}/{key[1]}")
            await self.servers.pop(key).stop()
        for key, plan in plans.items():
            for problem in plan.problems:
                self.say(f"{plan.route}: {problem}")
            running = self.servers.get(key)
            if running is None:
                self.servers[key] = self._start(plan, http)
            elif running.plan != plan:
                self.say(f"updating {plan.route}")
                await running.update(plan)
        routable = [p for p in plans.values() if p.shim_config is not None]
        tokens.set_routes(p.route for p in routable)
        self.directory.replace(
            (_entry(p) for p in routable),
            PolicyIndex.build(manifests.policies),
            manifests.catalog_entries,
        )
        self._table_dirty.set()

    def _start(self, plan: ServerPlan, http: aiohttp.ClientSession) -> LocalServer:
        if not plan.problems:
            self.say(f"starting {plan.route} ({plan.runtime_kind})")
        server = LocalServer(
            plan,
            self.options.data_dir / "run",
            self.options.python_bin,
            http,
            self.say,
            self._table_dirty.set,
        )
        server.start()
        return server

    async def _print_when_ready(self) -> None:
        printed_configs = False
        last = ""
        patience = asyncio.get_running_loop().time() + PRINT_PATIENCE
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._table_dirty.wait(), PRINT_PATIENCE)
            self._table_dirty.clear()
            starting = any(s.state == "starting" for s in self.servers.values())
            if starting and asyncio.get_running_loop().time() < patience:
                continue
            rows = self.rows()
            text = output.table(rows)
            if text == last:
                continue
            last = text
            self.say("\n" + text + "\n")
            if not printed_configs:
                printed_configs = True
                self.say(f"API key (admin): {self.key}\n")
                self.say(output.client_configs([r for r in rows if r.state == "ready"], self.key))
                self.say("\nwatching " + f"{self.options.manifest_dir} for changes; Ctrl-C stops")

    def rows(self) -> list[output.Row]:
        return [
            output.Row(
                route=s.plan.route,
                runtime=s.plan.runtime_kind,
                state=s.state,
                tools=s.tools,
                url=output.server_url(self.options.base_url, s.plan.namespace, s.plan.name),
            )
            for s in self.servers.values()
        ]

    async def _stop_all(self) -> None:
        servers = list(self.servers.values())
        self.servers.clear()
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)


def _entry(plan: ServerPlan) -> ServerEntry:
    return ServerEntry(
        plan.namespace,
        plan.name,
        f"http://127.0.0.1:{plan.ports.shim}/mcp",
        "shared",
        dict(plan.labels),
        plan.catalog_entry,
    )
