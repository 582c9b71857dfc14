"""The registry endpoints of `corral dev`: the example servers in ``/api/servers`` with the tool
counts the runtime probed, and a catalog entry added to the manifest directory showing up in
``/v0/servers``."""

from __future__ import annotations

from typing import Any

import aiohttp
import yaml

from tests.dev.platform import DevPlatform
from tests.dev.test_dev import eventually
from tests.gateway.registry_schema import check_server_list

WEATHER = {
    "apiVersion": "corral.dev/v1alpha1",
    "kind": "MCPCatalogEntry",
    "metadata": {"name": "weather"},
    "spec": {
        "title": "Weather",
        "description": "Forecasts for a city.",
        "version": "0.3.0",
        "runtime": {"uvx": {"package": "weather-mcp==0.3.0"}},
    },
}


async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_api_servers_lists_the_examples_ready_with_tool_counts(platform: DevPlatform) -> None:
    url = f"{platform.base_url}/api/servers"

    async def both_ready() -> dict[str, Any]:
        status, body = await get_json(url, platform.headers)
        assert status == 200
        servers = {s["name"]: s for s in body["servers"]}
        assert set(servers) == {"everything", "time"}
        assert all(s["ready"] and s["toolCount"] for s in servers.values()), servers
        return servers

    servers = await eventually(both_ready, "both example servers ready in /api/servers")
    assert servers["time"]["url"] == platform.url("time")
    assert servers["time"]["status"]["reason"] == "ready"
    assert servers["everything"]["toolCount"] > servers["time"]["toolCount"] >= 2
    status, _ = await get_json(url)
    assert status == 401


async def test_a_catalog_entry_added_to_the_manifests_appears_in_v0_servers(
    platform: DevPlatform,
) -> None:
    url = f"{platform.base_url}/v0/servers"
    status, body = await get_json(url)
    assert (status, body["servers"]) == (200, [])
    (platform.manifests / "weather-entry.yaml").write_text(yaml.safe_dump(WEATHER))

    async def listed() -> dict[str, Any]:
        status, body = await get_json(url)
        assert status == 200
        assert body["servers"], body
        return dict(body)

    body = await eventually(listed, "the new catalog entry in /v0/servers")
    check_server_list(body)
    [entry] = body["servers"]
    assert entry["server"]["name"] == "default/weather"
    assert entry["server"]["version"] == "0.3.0"
    assert entry["server"]["packages"][0]["identifier"] == "weather-mcp"
