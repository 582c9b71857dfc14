"""The launcher leaves nothing behind (after a failed start, after Ctrl-C in the foreground) and
tries again when another process takes a port it picked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.cluster import launcher
from e2e.cluster.launcher import ClusterError, ControlPlane, Toolset
from e2e.cluster.processes import free_port

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def read_kubeconfig_export(foreground: subprocess.Popen[str]) -> str:
    """Reads the launcher's output up to its `export KUBECONFIG=...` line; returns the path."""
    assert foreground.stdout is not None
    for line in foreground.stdout:
        if line.startswith("export KUBECONFIG="):
            return line.strip().removeprefix("export KUBECONFIG=")
    raise AssertionError(f"the launcher exited ({foreground.wait()}) without printing KUBECONFIG")


def test_failed_start_prints_log_tails_and_leaves_nothing(
    k8s_toolset: Toolset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ClusterError, match="timed out after 0 s waiting for "):
        ControlPlane.start(k8s_toolset, timeout=0, temp_parent=tmp_path)
    assert "----- last lines of etcd" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_start_tries_again_when_a_picked_port_is_taken(
    k8s_toolset: Toolset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1]])
        monkeypatch.setattr(launcher, "free_port", lambda: next(ports, None) or free_port())
        with ControlPlane.start(k8s_toolset, nodes=1, temp_parent=tmp_path) as plane:
            assert plane.failed_components() == []
    err = capsys.readouterr().err
    assert "address already in use" in err
    assert "starting again" in err
    assert list(tmp_path.iterdir()) == []


def test_foreground_launcher_serves_until_interrupted_then_cleans_up(
    k8s_toolset: Toolset, tmp_path: Path
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "e2e.cluster.launcher", "--nodes", "1"],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    ) as foreground:
        try:
            kubeconfig = read_kubeconfig_export(foreground)
            nodes = subprocess.run(
                [str(k8s_toolset.binary("kubectl")), f"--kubeconfig={kubeconfig}", "get", "nodes"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert "kwok-node-0" in nodes.stdout
            assert processes_mentioning(str(tmp_path))
        finally:
            foreground.send_signal(signal.SIGINT)
            exit_code = foreground.wait(timeout=60)
    assert exit_code == 0
    assert list(tmp_path.iterdir()) == []
    assert processes_mentioning(str(tmp_path)) == []
