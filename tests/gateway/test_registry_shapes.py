"""The registry's pure shaping: MCPCatalogEntry to server.json and the MCP Registry API shapes,
cursors and query validation, and the ``/api/servers`` listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from corral.api.catalog import MCPCatalogEntry
from corral.api.policies import AccessPolicy
from corral.api.policy import PolicyIndex
from corral.api.registry import import_server_json
from corral.gateway import registry
from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry, ServerStatus, StaticDirectory
from tests.api.test_registry import NPM_SERVER
from tests.gateway.registry_schema import check_server_list, check_server_response


def entry(name: str, namespace: str = "tools", **spec: Any) -> MCPCatalogEntry:
    body = {"title": name.title(), "runtime": {"npx": {"package": f"{name}-mcp@1.0.0"}}, **spec}
    return MCPCatalogEntry.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": body}
    )


def test_an_npx_entry_becomes_an_npm_package_with_its_inputs() -> None:
    weather = entry(
        "weather",
        description="Forecasts. " * 20,
        version="1.2.0",
        repository="https://github.com/acme/weather",
        icon="https://acme.dev/i.png",
        categories=["data"],
        runtime={"npx": {"package": "@acme/weather-mcp@1.2.0", "args": ["serve"]}},
        config=[
            {"name": "API_KEY", "secret": True, "required": True, "description": "the key"},
            {"name": "region", "target": "arg", "key": "--region={value}", "default": "eu"},
            {"name": "city", "target": "arg", "key": "{value}"},
            {"name": "ca", "target": "file", "key": "/etc/ca.pem"},
        ],
        toolPreview=[{"name": "forecast", "description": "A forecast."}],
    )
    document = registry.server_response(weather)
    check_server_response(document)
    server = document["server"]
    assert server["name"] == "tools/weather"
    assert (server["title"], server["version"]) == ("Weather", "1.2.0")
    assert len(server["description"]) <= 100
    assert server["description"].endswith("s.…")
    assert server["repository"] == {"url": "https://github.com/acme/weather", "source": "github"}
    assert server["icons"] == [{"src": "https://acme.dev/i.png"}]
    [package] = server["packages"]
    assert package["registryType"] == "npm"
    assert (package["identifier"], package["version"]) == ("@acme/weather-mcp", "1.2.0")
    assert package["transport"] == {"type": "stdio"}
    assert package["packageArguments"] == [
        {"type": "positional", "value": "serve"},
        {"name": "--region", "isRequired": False, "default": "eu", "type": "named"},
        {"isRequired": False, "type": "positional", "valueHint": "city"},
    ]
    assert package["environmentVariables"] == [
        {"name": "API_KEY", "description": "the key", "isRequired": True, "isSecret": True}
    ]
    meta = document["_meta"][registry.CORRAL_META]
    assert meta["description"] == "Forecasts. " * 20
    assert meta["categories"] == ["data"]
    assert meta["toolPreview"] == [{"name": "forecast", "description": "A forecast."}]
    assert [c["name"] for c in meta["config"]] == ["API_KEY", "region", "city", "ca"]
    assert (meta["namespace"], meta["name"], meta["runtime"]) == ("tools", "weather", "npx")
    official = document["_meta"][registry.OFFICIAL_META]
    assert official == {"status": "active", "isLatest": True}


def test_other_runtimes_map_to_pypi_oci_and_remotes() -> None:
    time = entry("time", runtime={"uvx": {"package": "mcp-server-time==2025.9.25"}})
    web = entry(
        "web", runtime={"container": {"image": "ghcr.io/acme/web:2", "port": 9000, "path": "/x"}}
    )
    git = entry("git", runtime={"stdio": {"image": "acme/git:1", "command": ["git-mcp"]}})
    remote = entry(
        "remote",
        runtime={
            "remote": {
                "url": "https://mcp.acme.dev/mcp",
                "headers": [
                    {"name": "X-Team", "value": "blue"},
                    {"name": "X-Token", "secretKeyRef": {"name": "token", "key": "value"}},
                ],
            }
        },
        config=[{"name": "key", "target": "header", "key": "X-Api-Key", "secret": True}],
    )
    body = registry.server_list([time, web, git, remote], registry.ListQuery())
    check_server_list(body)
    by_name = {item["server"]["name"]: item["server"] for item in body["servers"]}
    [pypi] = by_name["tools/time"]["packages"]
    assert (pypi["registryType"], pypi["identifier"], pypi["version"]) == (
        "pypi",
        "mcp-server-time",
        "2025.9.25",
    )
    [oci] = by_name["tools/web"]["packages"]
    assert (oci["registryType"], oci["identifier"]) == ("oci", "ghcr.io/acme/web:2")
    assert oci["transport"] == {"type": "streamable-http", "url": "http://localhost:9000/x"}
    assert by_name["tools/git"]["packages"][0]["transport"] == {"type": "stdio"}
    assert "packages" not in by_name["tools/remote"]
    assert by_name["tools/remote"]["remotes"] == [
        {
            "type": "streamable-http",
            "url": "https://mcp.acme.dev/mcp",
            "headers": [
                {"name": "X-Team", "value": "blue"},
                {"name": "X-Token", "isSecret": True},
                {"name": "X-Api-Key", "isRequired": False, "isSecret": True},
            ],
        }
    ]
    assert by_name["tools/time"]["version"] == registry.UNVERSIONED


def test_an_imported_server_json_goes_back_out_in_the_registry_shape() -> None:
    imported = import_server_json(NPM_SERVER).entry
    assert imported is not None
    document = registry.server_response(imported)
    check_server_response(document)
    server = document["server"]
    assert server["name"] == "default/io-github-acme-weather-server"
    assert server["version"] == NPM_SERVER["version"]
    package = server["packages"][0]
    assert (package["identifier"], package["version"]) == ("@acme/weather-mcp", "1.2.0")
    names = {v["name"] for v in package["environmentVariables"]}
    assert names == {"WEATHER_API_KEY", "LOG_LEVEL"}
    corral_meta = document["_meta"][registry.CORRAL_META]
    assert corral_meta["registryName"] == NPM_SERVER["name"], "the original name is kept"


def test_timestamps_come_from_creation_and_the_last_spec_write() -> None:
    created = entry("t").model_copy(
        update={
            "metadata": entry("t").metadata.model_copy(
                update={
                    "creationTimestamp": "2026-01-02T03:04:05Z",
                    "managedFields": [
                        {"manager": "kubectl", "time": "2026-02-01T00:00:00Z"},
                        {"manager": "op", "time": "2026-03-01T00:00:00Z", "subresource": "status"},
                    ],
                }
            )
        }
    )
    official = registry.server_response(created)["_meta"][registry.OFFICIAL_META]
    assert official["publishedAt"] == "2026-01-02T03:04:05Z"
    assert official["updatedAt"] == "2026-02-01T00:00:00Z"
    since = registry.parse_list_query({"updated_since": "2026-01-15T00:00:00Z"})
    assert [s["server"]["name"] for s in registry.server_list([created], since)["servers"]] == [
        "tools/t"
    ]
    later = registry.parse_list_query({"updated_since": "2026-02-02T00:00:00+00:00"})
    assert registry.server_list([created], later)["servers"] == []
    assert later.updated_since == datetime(2026, 2, 2, tzinfo=UTC)


def test_pages_return_every_entry_once_in_name_order() -> None:
    entries = [entry(f"s{n:02d}", namespace=ns) for n in range(7) for ns in ("b", "a-x", "a")]
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        body = registry.server_list(entries, registry.parse_list_query(params))
        seen += [item["server"]["name"] for item in body["servers"]]
        assert body["metadata"]["count"] == len(body["servers"])
        cursor = body["metadata"].get("nextCursor")
        if cursor is None:
            break
    assert seen == sorted(registry.registry_name(e) for e in entries)
    assert len(seen) == len(set(seen)) == 21


def test_search_and_version_filters() -> None:
    entries = [entry("weather", version="2.0"), entry("time"), entry("Weathervane", "ops")]
    search = registry.parse_list_query({"search": "WEATHER"})
    names = [s["server"]["name"] for s in registry.server_list(entries, search)["servers"]]
    assert names == ["ops/Weathervane", "tools/weather"]
    exact = registry.parse_list_query({"version": "2.0"})
    assert [s["server"]["name"] for s in registry.server_list(entries, exact)["servers"]] == [
        "tools/weather"
    ]
    latest = registry.parse_list_query({"version": "latest"})
    assert len(registry.server_list(entries, latest)["servers"]) == 3


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, "limit must be a whole number from 1 to 100"),
        ({"limit": "101"}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
        ({"limit": "-1"}, "limit must be"),
        ({"cursor": "not a cursor!"}, "cursor is not one this registry issued"),
        ({"cursor": "Zm9v"}, "cursor is not one this registry issued"),
        ({"cursor": "_w"}, "cursor is not one this registry issued"),
        ({"updated_since": "yesterday"}, "updated_since must be an RFC 3339 time"),
        ({"updated_since": "2026-01-01T00:00:00"}, "with a zone"),
    ],
)
def test_bad_query_parameters_are_refused_with_a_reason(params: dict[str, str], words: str) -> None:
    with pytest.raises(registry.QueryError, match=words):
        registry.parse_list_query(params)


def test_a_cursor_round_trips() -> None:
    assert registry.decode_cursor(registry.encode_cursor("a-x/s.01_b")) == "a-x/s.01_b"


def test_api_listing_shows_what_policies_open_with_catalog_text_and_status() -> None:
    servers = [
        ServerEntry("tools", "weather", "http://shim", catalog_entry="weather"),
        ServerEntry("tools", "secret", "http://shim", tenancy="perUser"),
    ]
    policy = AccessPolicy.model_validate(
        {
            "metadata": {"name": "dev", "namespace": "tools"},
            "spec": {
                "subjects": [{"group": "dev"}],
                "targets": {"servers": ["weather"]},
                "rules": [{"effect": "Allow", "methods": ["*"]}],
            },
        }
    )
    status = ServerStatus(ready=True, reason="Ready", tool_count=2, tools=("a", "b"))
    directory = StaticDirectory(
        servers,
        PolicyIndex.build([policy]),
        catalog=[entry("weather", description="Forecasts.")],
        statuses={("tools", "weather"): status},
    )
    dev = Principal(user="dana", groups=("dev",))
    listed = registry.server_listings(directory, dev, "https://corral.test/")
    assert listed == [
        {
            "namespace": "tools",
            "name": "weather",
            "title": "Weather",
            "description": "Forecasts.",
            "tenancy": "shared",
            "url": "https://corral.test/mcp/tools/weather",
            "catalogEntry": "weather",
            "ready": True,
            "status": {"reason": "Ready", "message": None},
            "toolCount": 2,
            "tools": ["a", "b"],
        }
    ]
    assert registry.server_listings(directory, Principal(user="olga", groups=("ops",)), "") == []
    limited = Principal(user="dana", groups=("dev",), allowed_servers=frozenset({"tools/x"}))
    assert registry.server_listings(directory, limited, "") == []
    open_directory = StaticDirectory(servers)
    names = [s["name"] for s in registry.server_listings(open_directory, dev, "")]
    assert names == ["secret", "weather"]
    assert registry.server_listings(open_directory, dev, "")[0]["ready"] is None


def test_a_walk_survives_entries_coming_and_going() -> None:
    first = registry.server_list(
        [entry(n) for n in ("a", "b", "c", "d")], registry.parse_list_query({"limit": "2"})
    )
    assert [s["server"]["name"] for s in first["servers"]] == ["tools/a", "tools/b"]
    changed = [entry(n) for n in ("a", "aa", "c", "d", "e")]
    query = {"limit": "2", "cursor": first["metadata"]["nextCursor"]}
    second = registry.server_list(changed, registry.parse_list_query(query))
    assert [s["server"]["name"] for s in second["servers"]] == ["tools/c", "tools/d"]
    query["cursor"] = second["metadata"]["nextCursor"]
    third = registry.server_list(changed, registry.parse_list_query(query))
    assert [s["server"]["name"] for s in third["servers"]] == ["tools/e"]
    assert "nextCursor" not in third["metadata"]
