"""One MCPServer running locally: its process, its shim, their readiness and tool count.

Rule: a `LocalServer` applies a `ServerPlan` the way a pod would run it: the server's command
(through `corral bridge` for stdio runtimes) and `corral shim --config FILE`, both supervised
children. A new plan with the same process only rewrites the shim's file (the shim reloads it);
a changed process is restarted. Readiness is re-checked after every (re)start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from corral.dev.children import Child, log_tail
from corral.dev.plans import LOOPBACK, ServerPlan
from corral.dev.probe import ProbeError, count_tools

READY_POLL = 0.2
LOG_PREFIX = re.compile(r"^\S+ \S+ [A-Z]+ \S+: (session \S+ stderr: )?")
PROGRESS_EVERY = 5.0


@dataclass(frozen=True)
class Paths:
    """Where a server's files go."""

    config: Path
    server_log: Path
    shim_log: Path


class LocalServer:
    """The processes of one server, kept in line with its latest plan."""

    def __init__(
        self,
        plan: ServerPlan,
        run_dir: Path,
        python_bin: Path,
        http: aiohttp.ClientSession,
        report: Callable[[str], None],
        changed: Callable[[], None],
    ) -> None:
        self.plan = plan
        base = f"{plan.namespace}.{plan.name}"
        self.paths = Paths(
            run_dir / f"{base}.shim.json",
            run_dir / "logs" / f"{base}.server.log",
            run_dir / "logs" / f"{base}.shim.log",
        )
        self._python_bin = python_bin
        self._http = http
        self._report = report
        self._changed = changed
        self.state = "starting"
        self.tools: int | None = None
        self.ready = asyncio.Event()
        self._server: Child | None = None
        self._shim: Child | None = None
        self._watch: asyncio.Task[None] | None = None
        self._restarted = asyncio.Event()

    @property
    def pids(self) -> list[int]:
        children = (self._server, self._shim)
        return [c.state.pid for c in children if c is not None and c.state.pid is not None]

    def start(self) -> None:
        if self.plan.problems:
            self.state = "not started: " + self.plan.problems[0]
            return
        self._write_config()
        self._start_server()
        argv = (str(self._python_bin / "corral"), "shim", "--config", str(self.paths.config))
        self._shim = self._child("shim", argv, self.paths.shim_log)
        self._shim.start()
        self._watch = asyncio.create_task(self._watch_readiness(), name=f"ready {self.plan.route}")

    async def update(self, plan: ServerPlan) -> None:
        """Move to ``plan``: restart what changed, rewrite the shim file otherwise."""
        old, self.plan = self.plan, plan
        if old.problems or plan.problems or old.ports != plan.ports:
            await self.stop()
            self.state, self.tools = "starting", None
            self.ready.clear()
            self.start()
            return
        if old.process != plan.process:
            if self._server is not None:
                await self._server.stop()
            self._start_server()
            self._restarted.set()
        if old.shim_config != plan.shim_config:
            self._write_config()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for child in (self._shim, self._server):
            if child is not None:
                await child.stop()
        self._shim = self._server = self._watch = None
        self.paths.config.unlink(missing_ok=True)

    def _start_server(self) -> None:
        process = self.plan.process
        self._server = None
        if process is None:
            return
        self._server = self._child("server", process.argv, self.paths.server_log, process.env)
        self._server.start()

    def _child(
        self, role: str, argv: tuple[str, ...], log: Path, env: Mapping[str, str] | None = None
    ) -> Child:
        return Child(
            name=f"{self.plan.route} {role}",
            argv=argv,
            log_path=log,
            env=dict(env or {}),
            on_change=self._on_child,
        )

    def _on_child(self, child: Child) -> None:
        state = child.state
        if state.phase == "restarting":
            tail = "\n    ".join(log_tail(child.log_path, 3))
            self._report(
                f"{child.name} exited with status {state.last_exit}; restart #{state.restarts} "
                f"in {state.next_start:.0f} s (log {child.log_path})"
                + (f"\n    {tail}" if tail else "")
            )
            self.state = f"restarting (#{state.restarts})"
            self.ready.clear()
            self._changed()
        elif state.phase == "running" and state.restarts:
            self._restarted.set()

    def _write_config(self) -> None:
        self.paths.config.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.plan.shim_config, indent=2)
        temporary = self.paths.config.with_suffix(".new")
        temporary.write_text(text)
        temporary.chmod(0o600)
        temporary.replace(self.paths.config)

    async def _watch_readiness(self) -> None:
        while True:
            self._restarted.clear()
            await self._become_ready()
            await self._restarted.wait()
            self.state, self.tools = "starting", None
            self.ready.clear()
            self._changed()

    async def _become_ready(self) -> None:
        ticker = asyncio.create_task(self._show_progress(), name=f"progress {self.plan.route}")
        try:
            while True:
                if await self._answers():
                    break
                await asyncio.sleep(READY_POLL)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        self.state = "ready"
        self.ready.set()
        self._changed()

    async def _show_progress(self) -> None:
        waited = 0.0
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            waited += PROGRESS_EVERY
            self._report(self._progress(waited))

    def _progress(self, waited: float) -> str:
        process = self.plan.process
        why = process.slow_start if process is not None and process.slow_start else "starting"
        last = log_tail(self.paths.server_log, 1)
        detail = f": {LOG_PREFIX.sub('', last[0])[:120]}" if last else ""
        return f"{self.plan.route}: still starting after {waited:.0f} s ({why}){detail}"

    async def _answers(self) -> bool:
        admin = f"http://{LOOPBACK}:{self.plan.ports.admin}/readyz"
        try:
            async with self._http.get(admin, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status != 200:
                    return False
            if self.plan.probe_url is not None:
                probe = count_tools(self._http, self.plan.probe_url, self.plan.startup_timeout)
                self.tools = await probe
        except (aiohttp.ClientError, TimeoutError, ProbeError, ValueError):
            return False
        return True
