"""Supervised child processes: each in its own process group, restarted with backoff.

Rule: a `Child` owns one command. It starts it in a new session (so stopping it ends everything
the command spawned), appends its output to a log file, and restarts it after an unexpected exit
after 1, 2, 4 ... up to 30 seconds (back to 1 after a minute of good running). Every change of
state is reported through ``on_change``. ``stop`` sends SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
STOP_GRACE = 5.0


@dataclass
class ChildState:
    """What a child is doing now."""

    phase: str = "starting"
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    next_start: float | None = None


@dataclass
class Child:
    """One supervised command."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    on_change: Callable[[Child], None] = lambda _child: None
    state: ChildState = field(default_factory=ChildState)
    _task: asyncio.Task[None] | None = None
    _process: asyncio.subprocess.Process | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"child {self.name}")

    async def started(self) -> None:
        """Return once the command has been started at least once."""
        await self._started.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set(phase="stopped", pid=None)

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            code = await self._run_once()
            if loop.time() - began > HEALTHY_AFTER:
                delay = BACKOFF_FIRST
            self._set(
                phase="restarting",
                pid=None,
                restarts=self.state.restarts + 1,
                last_exit=code,
                next_start=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _run_once(self) -> int:
        with _open_log(self.log_path) as log:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
            )
        self._process = process
        self._set(phase="running", pid=process.pid, next_start=None)
        self._started.set()
        try:
            code = await process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return code
        finally:
            if process.returncode is None:
                await asyncio.shield(_end_group(process))
            self._process = None

    def _set(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.on_change(self)


async def _end_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after ``STOP_GRACE`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


def log_tail(path: Path, lines: int = 5) -> list[str]:
    """The last ``lines`` lines of a log file (empty when absent)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 4096))
            text = file.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
