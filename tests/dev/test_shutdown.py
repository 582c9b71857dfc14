"""Ctrl-C (SIGINT) stops `corral dev` and every process it started."""

from __future__ import annotations

from pathlib import Path

from tests.dev.platform import start_platform, stop_platform


def test_sigint_leaves_no_child_process(tmp_path: Path) -> None:
    platform = start_platform(tmp_path)
    started = platform.descendants()
    commands = [" ".join(p.cmdline()) for p in started]
    assert any("postgres" in c for c in commands)
    assert sum("corral shim" in c for c in commands) == 2
    assert any("mcp-server-time" in c for c in commands)

    left = stop_platform(platform)

    assert left == []
    assert platform.popen.returncode == 0
    assert "stopped" in platform.output()
