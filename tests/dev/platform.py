"""`corral dev` as a subprocess for the tests: a copy of examples/dev, a temporary data
directory, a free port; the printed API key read from its output.

Rule: every wait polls a condition against a deadline. Stopping sends SIGINT (as Ctrl-C does),
then kills whatever descendant is left, so a failing test cannot leak processes; the test of
clean shutdown checks that nothing was left before that cleanup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.fixtures.processes import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "dev"
CORRAL = Path(sys.executable).parent / "corral"
KEY_LINE = re.compile(r"^API key \(admin\): (\S+)$", re.MULTILINE)
POLL = 0.1
START_TIMEOUT = 120.0


@dataclass
class DevPlatform:
    """A running `corral dev`."""

    popen: subprocess.Popen[bytes]
    manifests: Path
    data_dir: Path
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str, namespace: str = "default") -> str:
        return f"{self.base_url}/mcp/{namespace}/{name}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def key(self) -> str:
        match = KEY_LINE.search(self.output())
        assert match is not None, f"no API key printed:\n{self.output()[-3000:]}"
        return match.group(1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"corral dev exited ({self.popen.returncode}) before {what}:\n"
                    f"{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} in {timeout} s:\n{self.output()[-4000:]}")
            time.sleep(POLL)

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.popen.pid).children(recursive=True)
        return []

    def child_running(self, *words: str) -> psutil.Process | None:
        for process in self.descendants():
            with contextlib.suppress(psutil.Error):
                command = " ".join(process.cmdline())
                if all(word in command for word in words):
                    return process
        return None


def start_platform(
    base: Path, command: Callable[[Path, Path, int], Sequence[str]] | None = None
) -> DevPlatform:
    """Start `corral dev` on a copy of examples/dev under ``base``; wait for the first table.

    ``command(manifests, data_dir, port)`` gives another command line that runs it.
    """
    manifests = base / "manifests"
    shutil.copytree(EXAMPLES, manifests)
    data_dir = base / "data"
    log_path = base / "corral-dev.log"
    port = free_port()
    argv = (command or _corral_dev)(manifests, data_dir, port)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    platform = DevPlatform(popen, manifests, data_dir, port, log_path)
    platform.wait_for(
        lambda: KEY_LINE.search(platform.output()) is not None, "printing its key", START_TIMEOUT
    )
    return platform


def _corral_dev(manifests: Path, data_dir: Path, port: int) -> list[str]:
    return [str(CORRAL), "dev", str(manifests), "--data-dir", str(data_dir), "--port", str(port)]


def stop_platform(platform: DevPlatform, *, timeout: float = 60.0) -> list[psutil.Process]:
    """SIGINT to its process group (as Ctrl-C in a terminal), wait for the exit; return the
    descendants still alive then (and kill them)."""
    children = platform.descendants()
    if platform.popen.poll() is None:
        os.killpg(platform.popen.pid, signal.SIGINT)
        try:
            platform.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            platform.popen.kill()
            platform.popen.wait()
    left = [p for p in children if _alive(p)]
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _remove_postgres_cluster(platform.data_dir)
    return left


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _remove_postgres_cluster(data_dir: Path) -> None:
    link = data_dir / "postgres"
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)


@contextlib.contextmanager
def running_platform(
    base: Path, command: Callable[[Path, Path, int], Sequence[str]] | None = None
) -> Iterator[DevPlatform]:
    platform = start_platform(base, command)
    try:
        yield platform
    finally:
        stop_platform(platform)
