"""Test-bed processes: early exits fail fast with their log, teardown ends the whole group."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.processes import (
    ProcessFailedError,
    port_accepts,
    start_listening_server,
    start_process,
)

SPAWNS_A_CHILD = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
print(child.pid, flush=True)
child.wait()
"""


def test_a_server_that_exits_fails_with_its_log(tmp_path: Path) -> None:
    def argv_for(port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-c", "print('cannot start'); raise SystemExit(3)"], {}

    with pytest.raises(ProcessFailedError, match=r"(?s)exited with code 3.*cannot start"):
        start_listening_server("doomed", argv_for, log_path=tmp_path / "log", attempts=2)


def test_a_listening_server_is_ready_on_its_port(tmp_path: Path) -> None:
    def argv_for(port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(port)], {}

    process, port = start_listening_server("http.server", argv_for, log_path=tmp_path / "log")
    try:
        assert port_accepts("127.0.0.1", port)
    finally:
        process.stop()
    assert not port_accepts("127.0.0.1", port)


def test_stop_ends_the_children_too(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = start_process("parent", [sys.executable, "-c", SPAWNS_A_CHILD], log_path=log)
    process.wait_until(lambda: log.read_text().strip() != "", timeout=30, what="child started")
    child_pid = int(log.read_text().split()[0])

    process.stop(grace=5.0)

    assert _ends_within(child_pid, timeout=10.0)


def _ends_within(pid: int, *, timeout: float) -> bool:
    """Whether `pid` is gone or a zombie (its reaper may be a PID 1 that never reaps) in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
