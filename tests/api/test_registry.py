"""Importing MCP Registry `server.json` documents as catalog entries."""

from __future__ import annotations

from typing import Any

from corral.api.registry import entry_name, import_server_json
from corral.api.resolve import resolve_server
from corral.api.servers import MCPServer
from tests.api.manifests import server

NPM_SERVER: dict[str, Any] = {
    "name": "io.github.acme/Weather_Server",
    "title": "Weather",
    "description": "Forecasts for a city.",
    "version": "1.2.0",
    "repository": {"url": "https://github.com/acme/weather", "source": "github"},
    "icons": [{"src": "http://insecure.example.com/i.png"}, {"src": "https://acme.dev/i.png"}],
    "packages": [
        {
            "registryType": "nuget",
            "identifier": "Acme.Weather",
            "version": "1.2.0",
            "transport": {"type": "stdio"},
        },
        {
            "registryType": "npm",
            "identifier": "@acme/weather-mcp",
            "version": "1.2.0",
            "transport": {"type": "stdio"},
            "packageArguments": [
                {"type": "positional", "value": "serve"},
                {"type": "named", "name": "--units", "value": "metric"},
                {
                    "type": "named",
                    "name": "--region",
                    "description": "Region code",
                    "default": "eu",
                },
                {"type": "named", "name": "--token", "isSecret": True},
            ],
            "environmentVariables": [
                {"name": "WEATHER_API_KEY", "isRequired": True, "isSecret": True},
                {"name": "LOG_LEVEL", "default": "info"},
            ],
        },
    ],
}


def test_entry_name() -> None:
    assert entry_name("io.github.acme/Weather_Server") == "io-github-acme-weather-server"
    assert entry_name("///") == "server"
    assert len(entry_name("a" * 300)) == 63


def test_npm_package_becomes_an_npx_entry_with_config() -> None:
    imported = import_server_json(NPM_SERVER)
    assert imported.entry is not None
    spec = imported.entry.spec
    assert imported.entry.metadata.name == "io-github-acme-weather-server"
    assert (spec.title, spec.version) == ("Weather", "1.2.0")
    assert spec.icon == "https://acme.dev/i.png"
    assert spec.runtime.npx is not None
    assert spec.runtime.npx.package == "@acme/weather-mcp@1.2.0"
    assert spec.runtime.npx.args == ["serve", "--units", "metric"]
    items = {c.name: c for c in spec.config or ()}
    assert (items["WEATHER_API_KEY"].secret, items["WEATHER_API_KEY"].target) == (True, "env")
    assert items["LOG_LEVEL"].default == "info"
    assert (items["region"].target, items["region"].key) == ("arg", "--region={value}")
    assert imported.problems == (
        "package Acme.Weather (nuget, stdio) is not supported; skipped",
        "argument '--token' is secret; skipped",
    )


def test_imported_entry_resolves_into_a_runnable_server() -> None:
    entry = import_server_json(NPM_SERVER).entry
    assert entry is not None
    key = {"name": "WEATHER_API_KEY", "secretKeyRef": {"name": "weather", "key": "apiKey"}}
    spec = MCPServer.model_validate(
        server(runtime=None, catalogEntry={"name": "weather", "config": [key]})
    ).spec
    resolution = resolve_server(spec, entry.spec)
    assert resolution.problems == ()
    effective = resolution.server
    assert effective is not None
    assert effective.runtime.npx is not None
    assert effective.runtime.npx.args == ["serve", "--units", "metric", "--region=eu"]
    assert {e.name for e in effective.env} == {"WEATHER_API_KEY", "LOG_LEVEL"}


def test_pypi_oci_and_remote() -> None:
    pypi = import_server_json(
        {
            "name": "t",
            "packages": [
                {"registryType": "pypi", "identifier": "mcp-server-time", "version": "1.0"}
            ],
        }
    )
    assert pypi.entry is not None
    assert pypi.entry.spec.runtime.uvx is not None
    assert pypi.entry.spec.runtime.uvx.package == "mcp-server-time==1.0"
    oci = import_server_json(
        {
            "name": "o",
            "packages": [
                {
                    "registryType": "oci",
                    "identifier": "ghcr.io/acme/o",
                    "version": "2",
                    "transport": {"type": "streamable-http", "url": "http://localhost:9000/mcp"},
                }
            ],
        }
    )
    assert oci.entry is not None
    container = oci.entry.spec.runtime.container
    assert container is not None
    assert (container.image, container.port) == ("ghcr.io/acme/o:2", 9000)
    remote = import_server_json(
        {
            "name": "r",
            "remotes": [
                {"type": "sse", "url": "https://{tenant}.acme.dev/sse"},
                {
                    "type": "streamable-http",
                    "url": "https://mcp.acme.dev/mcp",
                    "headers": [
                        {"name": "X-Client", "value": "corral"},
                        {"name": "Authorization", "isSecret": True, "isRequired": True},
                    ],
                },
            ],
        }
    )
    assert remote.entry is not None
    runtime = remote.entry.spec.runtime.remote
    assert runtime is not None
    assert runtime.url == "https://mcp.acme.dev/mcp"
    assert [(h.name, h.value) for h in runtime.headers or ()] == [("X-Client", "corral")]
    config = remote.entry.spec.config or []
    assert [(c.name, c.target, c.secret) for c in config] == [("Authorization", "header", True)]
    assert remote.problems == (
        "remote 'https://{tenant}.acme.dev/sse' is not a fixed https URL; skipped",
    )


def test_nothing_runnable() -> None:
    imported = import_server_json(
        {"name": "x", "packages": [{"registryType": "oci", "identifier": "i"}]}
    )
    assert imported.entry is None
    assert imported.problems[-1] == "no npm/pypi stdio package, OCI HTTP image or remote to run"
