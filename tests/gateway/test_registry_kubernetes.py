"""The registry endpoints over the Kubernetes watch cache on a real API server: a created
MCPCatalogEntry appears in ``/v0/servers`` (and leaves when deleted), and ``/api/servers`` shows
an MCPServer's Ready condition and recorded tools to the callers its policies admit."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from kubernetes import client

from corral.common.assertion import generate_signing_key
from corral.gateway.kubedirectory import GROUP, VERSION, KubernetesDirectory
from tests.fixtures.gateway import ApiKeyMaker, FakeShim, GatewayFactory
from tests.gateway.registry_schema import check_server_list
from tests.gateway.test_routing_kubernetes import crds_installed, eventually, kube

__all__ = ["crds_installed", "kube"]

pytestmark = pytest.mark.cluster


def weather_entry(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPCatalogEntry",
        "metadata": {"name": "weather", "namespace": namespace},
        "spec": {
            "title": "Weather",
            "description": "Forecasts for a city.",
            "version": "1.4.0",
            "runtime": {"npx": {"package": "@acme/weather-mcp@1.4.0"}},
            "config": [{"name": "API_KEY", "secret": True, "required": True}],
        },
    }


async def get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_a_created_catalog_entry_appears_in_v0_servers(
    kube: tuple[client.ApiClient, str],
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    api, namespace = kube
    custom = client.CustomObjectsApi(api)
    directory = KubernetesDirectory(api, namespace=namespace, retry_delay=0.2, watch_timeout=30)
    directory.start()
    try:
        assert await asyncio.to_thread(directory.wait_synced, 60.0)
        shim = FakeShim("http://127.0.0.1:9/mcp", generate_signing_key())
        gateway = await gateway_factory(shim, directory=directory)
        registry_url = f"{gateway.base_url}/v0/servers"
        status, body = await get(registry_url)
        assert (status, body["servers"]) == (200, [])

        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "mcpcatalogentries", weather_entry(namespace)
        )
        await eventually(lambda: len(directory.catalog()) == 1)
        status, body = await get(registry_url)
        assert status == 200
        check_server_list(body)
        [listed] = body["servers"]
        server = listed["server"]
        assert server["name"] == f"{namespace}/weather"
        assert (server["title"], server["version"]) == ("Weather", "1.4.0")
        assert server["packages"][0]["identifier"] == "@acme/weather-mcp"
        official = listed["_meta"]["io.modelcontextprotocol.registry/official"]
        assert official["publishedAt"].endswith("Z")
        assert official["updatedAt"] >= official["publishedAt"]
        status, one = await get(f"{registry_url}/{quote(server['name'], safe='')}")
        assert (status, one) == (200, listed)

        server_manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MCPServer",
            "metadata": {"name": "forecasts", "namespace": namespace},
            "spec": {"catalogEntry": {"name": "weather"}},
        }
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "mcpservers", server_manifest
        )
        policy = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AccessPolicy",
            "metadata": {"name": "dev", "namespace": namespace},
            "spec": {
                "subjects": [{"group": "dev"}],
                "targets": {"catalogEntries": ["weather"]},
                "rules": [{"effect": "Allow", "methods": ["*"]}],
            },
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "accesspolicies", policy)
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "1 replica ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "mcpservers",
            "forecasts",
            {
                "status": {
                    "endpoint": "http://forecasts.svc:8080/mcp",
                    "conditions": [ready],
                    "tools": ["forecast", "alerts"],
                    "toolCount": 2,
                }
            },
        )
        await eventually(lambda: directory.lookup(namespace, "forecasts") is not None)
        await eventually(lambda: directory.status(directory.servers()[0]).ready is True)
        developer, _ = await api_key("dana", groups=("dev",))
        outsider, _ = await api_key("olga", groups=("ops",))
        status, body = await get(f"{gateway.base_url}/api/servers", developer)
        assert status == 200
        [usable] = body["servers"]
        assert (usable["name"], usable["title"], usable["catalogEntry"]) == (
            "forecasts",
            "Weather",
            "weather",
        )
        assert (usable["ready"], usable["toolCount"], usable["tools"]) == (
            True,
            2,
            ["forecast", "alerts"],
        )
        assert usable["status"] == {"reason": "Ready", "message": "1 replica ready"}
        assert usable["url"].endswith(f"/mcp/{namespace}/forecasts")
        status, body = await get(f"{gateway.base_url}/api/servers", outsider)
        assert (status, body["servers"]) == (200, [])

        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "mcpcatalogentries", "weather"
        )
        await eventually(lambda: not directory.catalog())
        status, body = await get(registry_url)
        assert (status, body["servers"]) == (200, [])
    finally:
        await asyncio.to_thread(directory.stop)
