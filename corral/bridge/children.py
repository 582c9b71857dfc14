"""One stdio MCP server process: newline-delimited JSON in and out, stderr to the log.

Rule: this module owns process lifetime. Each child runs in its own process group so `stop`
takes the whole tree down (SIGTERM, then SIGKILL after a grace period). `Spawner` spaces out
new children after early crashes (exponential backoff) so a broken server does not spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.bridge.backends import Backend, BackendUnavailableError
from corral.mcp.jsonrpc import Message, parse_trusted

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024 * 1024
EARLY_EXIT_SECONDS = 10.0


class Child:
    """A running stdio MCP server. Messages it writes go to `on_message`; its end to `on_exit`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        label: str,
        on_message: Callable[[Message], None],
        on_exit: Callable[[str], None],
    ) -> None:
        self._process = process
        self._label = label
        self._on_message = on_message
        self._on_exit = on_exit
        self._stopping = False
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"{label} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{label} stderr"),
        ]
        self._waiter = asyncio.create_task(self._wait(), name=f"{label} wait")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def started(self) -> float:
        return self._started

    async def send(self, body: bytes) -> None:
        """Write one message (already serialised, without newline) to the child's stdin."""
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing():
            raise ConnectionError(f"{self._label}: the server process is not accepting input")
        stdin.write(body.replace(b"\n", b" ") + b"\n")
        await stdin.drain()

    async def _read_stdout(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            if not line.strip():
                continue
            message = parse_trusted(line)
            if message is None:
                log.warning(
                    "%s: ignoring a stdout line that is not JSON-RPC: %.200r", self._label, line
                )
                continue
            self._on_message(message)

    async def _read_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while line := await stderr.readline():
            log.info("%s stderr: %s", self._label, line.decode(errors="replace").rstrip())

    async def _wait(self) -> None:
        code = await self._process.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        if not self._stopping:
            log.warning("%s: server process %d exited with code %d", self._label, self.pid, code)
        self._on_exit(f"the MCP server process exited with code {code}")

    async def stop(self, grace: float = 5.0) -> None:
        """Terminate the child's whole process group and wait for it."""
        self._stopping = True
        if self._process.returncode is None:
            _signal_group(self._process.pid, signal.SIGTERM)
            if self._process.stdin is not None:
                self._process.stdin.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._process.wait()), grace)
            except TimeoutError:
                log.warning("%s: process group did not stop in %.0fs; killing", self._label, grace)
        _signal_group(self._process.pid, signal.SIGKILL)
        await self._waiter
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Spawner:
    """Starts children of one command, backing off after children that die young."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    max_backoff: float = 30.0
    _early_exits: int = field(default=0, init=False)

    def backoff(self) -> float:
        """Seconds to wait before the next start."""
        if self._early_exits == 0:
            return 0.0
        return float(min(self.max_backoff, 0.5 * 2 ** (self._early_exits - 1)))

    def record_exit(self, child: Backend) -> None:
        """Count a crash (an exit we did not ask for, soon after start) or reset the count."""
        if child.stopping:
            return
        if time.monotonic() - child.started < EARLY_EXIT_SECONDS:
            self._early_exits += 1
        else:
            self._early_exits = 0

    async def spawn(
        self,
        label: str,
        on_message: Callable[[Message], None],
        on_exit: Callable[[str], None],
    ) -> Child:
        """Start one child, after the current backoff delay."""
        delay = self.backoff()
        if delay:
            log.info("%s: waiting %.1fs before starting after recent crashes", label, delay)
            await asyncio.sleep(delay)
        kwargs: dict[str, Any] = {}
        if self.env is not None:
            kwargs["env"] = dict(self.env)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=MAX_LINE_BYTES,
                **kwargs,
            )
        except OSError as exc:
            raise BackendUnavailableError(f"cannot start {self.argv[0]!r}: {exc}") from exc
        log.info("%s: started %s as pid %d", label, self.argv[0], process.pid)
        return Child(process, label, on_message, on_exit)

    async def aclose(self) -> None:
        """Nothing to release: each child is stopped with its session."""
