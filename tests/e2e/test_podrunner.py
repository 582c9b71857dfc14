"""The pod runner's mapping of a Pod spec onto this machine: paths, ports, shim configuration."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.podrunner import Mount, localize_shim_config, map_port_arguments, rewrite_paths


def test_mount_paths_are_rewritten_once_and_only_as_whole_path_prefixes() -> None:
    mounts = [Mount("/tmp", Path("/tmp/run/tmp")), Mount("/etc/corral/shim", Path("/tmp/run/c"))]
    assert rewrite_paths("--config=/etc/corral/shim/config.json", mounts) == (
        "--config=/tmp/run/c/config.json"
    )
    assert rewrite_paths("/tmp/home", mounts) == "/tmp/run/tmp/home"
    assert rewrite_paths("/tmpfile /var/tmp /etc/corral/shimmer", mounts) == (
        "/tmpfile /var/tmp /etc/corral/shimmer"
    )
    assert rewrite_paths('{"spool": "/tmp"}', mounts) == '{"spool": "/tmp/run/tmp"}'


def test_port_arguments_share_the_pods_mapping() -> None:
    ports = {8484: 41001}
    args = map_port_arguments(["corral", "bridge", "--port", "8000", "--", "x", "8000"], ports)
    assert args[3] == str(ports[8000])
    assert args[-1] == "8000", "only the value of --port is a port"
    assert map_port_arguments(["--port=8484"], ports) == ["--port=41001"]


def test_shim_configuration_listens_on_loopback_and_reaches_the_mapped_bridge() -> None:
    ports: dict[int, int] = {8000: 42000}
    config = localize_shim_config(
        {
            "listen": {"host": "0.0.0.0", "port": 8484},
            "admin": {"host": "0.0.0.0", "port": 9494},
            "upstream": {"url": "http://127.0.0.1:8000/mcp", "headers": {}},
        },
        ports,
    )
    assert config["listen"] == {"host": "127.0.0.1", "port": ports[8484]}
    assert config["admin"]["host"] == "127.0.0.1"
    assert config["upstream"]["url"] == "http://127.0.0.1:42000/mcp"
    remote = localize_shim_config({"upstream": {"url": "https://tickets.example.com/mcp"}}, {})
    assert remote["upstream"]["url"] == "https://tickets.example.com/mcp"
