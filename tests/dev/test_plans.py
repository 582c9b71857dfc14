"""What `corral dev` runs for each runtime, and the shim file it writes (pure planning)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.dev.manifests import load_manifests
from corral.dev.plans import Environment, PortBook, ServerPlan, installed_script, plan_servers
from corral.shim.config import ShimConfig
from tests.dev.platform import EXAMPLES

JWK = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k"}


def environment(
    tmp_path: Path, which: dict[str, str] | None = None, python_bin: Path | None = None
) -> Environment:
    tools = {"npx": "/usr/bin/npx"} if which is None else which
    return Environment(
        python_bin=python_bin or Path(sys.executable).parent,
        issuer="http://127.0.0.1:8080",
        jwks=(JWK,),
        audit_url="http://127.0.0.1:8080/api/audit/ingest",
        shim_token=lambda route: f"token-for-{route}",
        spool_dir=tmp_path / "spool",
        which=tools.get,
    )


def plans_for(tmp_path: Path, *documents: dict[str, Any], **env: Any) -> list[ServerPlan]:
    directory = tmp_path / "manifests"
    directory.mkdir(exist_ok=True)
    (directory / "all.yaml").write_text(yaml.safe_dump_all(documents))
    ports = PortBook(itertools.count(20000).__next__)
    return plan_servers(load_manifests(directory), ports, environment(tmp_path, **env))


def server(name: str, runtime: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": name},
        "spec": {"runtime": runtime, **spec},
    }


def test_examples_run_through_the_bridge_with_a_valid_shim_file(tmp_path: Path) -> None:
    ports = PortBook(itertools.count(20000).__next__)
    plans = {
        p.name: p for p in plan_servers(load_manifests(EXAMPLES), ports, environment(tmp_path))
    }
    everything, time = plans["everything"], plans["time"]
    assert everything.process is not None
    assert time.process is not None
    assert everything.process.argv[1:3] == ("bridge", "--host")
    assert everything.process.argv[-4:] == (
        "/usr/bin/npx", "--yes", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"
    )  # fmt: skip
    assert Path(time.process.argv[time.process.argv.index("--") + 1]).name == "mcp-server-time"
    config = ShimConfig.model_validate(time.shim_config)
    assert config.upstream.url == f"http://127.0.0.1:{time.ports.server}/mcp"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", time.ports.shim)
    assert [p.metadata.name for p in config.policies] == ["time-readers"]
    assert config.audit.sink.token is not None
    assert config.audit.sink.token.read() == "token-for-default/time"


def test_ports_stay_with_a_server_across_plans(tmp_path: Path) -> None:
    ports = PortBook(itertools.count(20000).__next__)
    first = plan_servers(load_manifests(EXAMPLES), ports, environment(tmp_path))
    second = plan_servers(load_manifests(EXAMPLES), ports, environment(tmp_path))
    assert [p.ports for p in first] == [p.ports for p in second]
    assert len({p.ports.shim for p in first}) == len(first)


def test_a_container_image_needs_a_cluster(tmp_path: Path) -> None:
    (plan,) = plans_for(tmp_path, server("img", {"container": {"image": "example/mcp:1"}}))
    assert plan.process is None
    assert plan.shim_config is None
    assert "needs a cluster" in plan.problems[0]


def test_a_streamable_http_command_runs_as_is_on_its_port(tmp_path: Path) -> None:
    runtime = {"container": {"image": "x", "command": ["node", "server.js"], "path": "/api"}}
    (plan,) = plans_for(tmp_path, server("web", runtime))
    assert plan.process is not None
    assert plan.process.argv == ("node", "server.js")
    assert plan.process.env["PORT"] == str(plan.ports.server)
    assert plan.upstream == f"http://127.0.0.1:{plan.ports.server}/api"


def test_a_remote_url_goes_through_the_shim_alone(tmp_path: Path) -> None:
    (plan,) = plans_for(tmp_path, server("far", {"remote": {"url": "https://mcp.example.com/mcp"}}))
    assert plan.process is None
    assert plan.shim_config is not None
    assert plan.shim_config["upstream"]["url"] == "https://mcp.example.com/mcp"


def test_uvx_without_the_package_or_uv_says_what_to_install(tmp_path: Path) -> None:
    runtime = {"uvx": {"package": "not-installed-pkg"}}
    (plan,) = plans_for(tmp_path, server("t", runtime), which={}, python_bin=tmp_path)
    assert "install uv" in plan.problems[0]


def test_uvx_next_to_python_is_found_without_path(tmp_path: Path) -> None:
    uvx = tmp_path / "uvx"
    uvx.write_text("#!/bin/sh\n")
    uvx.chmod(0o755)
    runtime = {"uvx": {"package": "not-installed-pkg"}}
    (plan,) = plans_for(tmp_path, server("t", runtime), which={}, python_bin=tmp_path)
    assert plan.process is not None
    assert plan.process.argv[-2:] == (str(uvx), "not-installed-pkg")


def test_uvx_falls_back_to_uvx_when_the_installed_version_does_not_match(tmp_path: Path) -> None:
    runtime = {"uvx": {"package": "mcp-server-time==1.0.0"}}
    (plan,) = plans_for(tmp_path, server("t", runtime), which={"uvx": "/bin/uvx"})
    assert plan.process is not None
    assert plan.process.argv[-2:] == ("/bin/uvx", "mcp-server-time==1.0.0")
    assert plan.process.slow_start is not None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"tenancy": "perUser"}, "tenancy perUser needs a cluster"),
        (
            {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            "env 'T' comes from a Secret",
        ),
    ],
)
def test_what_only_a_cluster_can_do_is_reported(
    tmp_path: Path, spec: dict[str, Any], problem: str
) -> None:
    (plan,) = plans_for(tmp_path, server("s", {"npx": {"package": "x"}}, **spec))
    assert any(problem in p for p in plan.problems)
    assert plan.process is None


def test_installed_script_respects_the_specifier(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    assert installed_script("mcp-server-time", bin_dir) == bin_dir / "mcp-server-time"
    assert installed_script("mcp-server-time<1", bin_dir) is None
    assert installed_script("no-such-distribution-here", bin_dir) is None
