"""The registry endpoints of a running gateway over real HTTP, with real Postgres API keys:
``/v0/servers`` in the MCP Registry API shape (pages, cursors, lookups, errors) and
``/api/servers`` filtered by AccessPolicies and credential limits."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from corral.api.catalog import MCPCatalogEntry
from corral.api.policies import AccessPolicy
from corral.api.policy import PolicyIndex
from corral.common.assertion import generate_signing_key
from corral.gateway.directory import ServerEntry, ServerStatus, StaticDirectory
from tests.fixtures.gateway import PUBLIC_BASE_URL, ApiKeyMaker, FakeShim, Gateway, GatewayFactory
from tests.gateway.registry_schema import check_server_list, check_server_response

NAMESPACE = "tools"
ENTRIES = 23


def catalog_entry(name: str, **spec: Any) -> MCPCatalogEntry:
    body = {
        "title": name.title(),
        "description": f"The {name} server.",
        "runtime": {"uvx": {"package": f"mcp-{name}==1.0.0"}},
        **spec,
    }
    return MCPCatalogEntry.model_validate(
        {"metadata": {"name": name, "namespace": NAMESPACE}, "spec": body}
    )


def allow(group: str, *servers: str) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": f"{group}-policy", "namespace": NAMESPACE},
            "spec": {
                "subjects": [{"group": group}],
                "targets": {"servers": list(servers)},
                "rules": [{"effect": "Allow", "methods": ["tools/call"]}],
            },
        }
    )


def directory() -> StaticDirectory:
    entries = [catalog_entry(f"entry-{n:02d}", version="1.0.0") for n in range(ENTRIES)]
    entries.append(catalog_entry("weather", version="2.1.0"))
    servers = [
        ServerEntry(NAMESPACE, "weather", "http://127.0.0.1:9/mcp", catalog_entry="weather"),
        ServerEntry(NAMESPACE, "memory", "http://127.0.0.1:9/mcp", tenancy="perUser"),
        ServerEntry(NAMESPACE, "billing", "http://127.0.0.1:9/mcp"),
    ]
    statuses = {
        (NAMESPACE, "weather"): ServerStatus(ready=True, reason="Ready", tool_count=1, tools=("f",))
    }
    policies = PolicyIndex.build([allow("dev", "weather", "memory"), allow("finance", "billing")])
    return StaticDirectory(servers, policies, catalog=entries, statuses=statuses)


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    shim = FakeShim("http://127.0.0.1:9/mcp", generate_signing_key())
    return await gateway_factory(shim, directory=directory())


async def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


async def test_pages_of_the_catalog_return_every_entry_once_in_order(gateway: Gateway) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "limit=5" + ("" if cursor is None else f"&cursor={quote(cursor, safe='')}")
        status, _, body = await get(f"{gateway.base_url}/v0/servers?{query}")
        assert status == 200
        check_server_list(body)
        assert body["metadata"]["count"] == len(body["servers"]) <= 5
        seen += [item["server"]["name"] for item in body["servers"]]
        pages += 1
        cursor = body["metadata"].get("nextCursor")
        if cursor is None:
            break
    expected = sorted([f"{NAMESPACE}/entry-{n:02d}" for n in range(ENTRIES)] + ["tools/weather"])
    assert seen == expected
    assert pages == 5
    status, _, everything = await get(f"{gateway.base_url}/v0/servers?limit=100")
    assert [s["server"]["name"] for s in everything["servers"]] == expected
    assert "nextCursor" not in everything["metadata"]
    status, _, default = await get(f"{gateway.base_url}/v0/servers")
    assert len(default["servers"]) == default["metadata"]["count"] == 24


async def test_search_and_the_v0_1_prefix(gateway: Gateway) -> None:
    status, _, body = await get(f"{gateway.base_url}/v0.1/servers?search=WEATH")
    assert status == 200
    assert [s["server"]["name"] for s in body["servers"]] == ["tools/weather"]
    weather = body["servers"][0]["server"]
    assert (weather["title"], weather["version"]) == ("Weather", "2.1.0")
    assert weather["packages"][0]["identifier"] == "mcp-weather"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("cursor=bogus%21", "cursor is not one this registry issued"),
        ("cursor=Zm9v", "cursor is not one this registry issued"),
        ("limit=0", "limit must be a whole number from 1 to 100"),
        ("limit=many", "limit must be a whole number from 1 to 100"),
        ("updated_since=last-week", "updated_since must be an RFC 3339 time"),
    ],
)
async def test_bad_cursor_or_limit_is_a_400_saying_why(
    gateway: Gateway, query: str, words: str
) -> None:
    status, _, body = await get(f"{gateway.base_url}/v0/servers?{query}")
    assert status == 400
    assert body["error"] == "invalid_query"
    assert words in body["message"]


async def test_one_server_by_url_encoded_name_and_its_versions(gateway: Gateway) -> None:
    base = f"{gateway.base_url}/v0/servers/{quote('tools/weather', safe='')}"
    status, _, latest = await get(base)
    assert status == 200
    check_server_response(latest)
    assert latest["server"]["name"] == "tools/weather"
    assert latest["_meta"]["dev.corral/catalog"]["description"] == "The weather server."
    status, _, versions = await get(f"{base}/versions")
    assert status == 200
    check_server_list(versions)
    assert [v["server"]["version"] for v in versions["servers"]] == ["2.1.0"]
    for version in ("2.1.0", "latest"):
        status, _, exact = await get(f"{base}/versions/{version}")
        assert (status, exact) == (200, latest)
    status, _, missing = await get(f"{base}/versions/1.0.0")
    assert status == 404
    assert "has no version '1.0.0'" in missing["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v0/servers/tools%2Fnowhere",
        "/v0/servers/tools%2Fnowhere/versions",
        "/v0.1/servers/other%2Fweather/versions/latest",
        "/v0/servers/weather",
    ],
)
async def test_an_unknown_server_is_a_404(gateway: Gateway, path: str) -> None:
    status, _, body = await get(f"{gateway.base_url}{path}")
    assert status == 404
    assert body["error"] == "not_found"
    assert "no server" in body["message"]


async def test_api_servers_needs_a_credential(gateway: Gateway) -> None:
    for token in (None, "not-a-key"):
        status, headers, body = await get(f"{gateway.base_url}/api/servers", token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith(
            f'Bearer resource_metadata="{PUBLIC_BASE_URL}/.well-known/oauth-protected-resource/api"'
        )
        assert body["error"] in ("unauthorized", "invalid_token")


async def test_api_servers_lists_only_what_policies_let_the_caller_use(
    gateway: Gateway, api_key: ApiKeyMaker
) -> None:
    developer, _ = await api_key("dana", groups=("dev",))
    accountant, _ = await api_key("abe", groups=("finance",))
    outsider, _ = await api_key("olga", groups=("ops",))
    limited, _ = await api_key("dan", groups=("dev",), servers=["tools/memory"])

    status, _, body = await get(f"{gateway.base_url}/api/servers", developer)
    assert status == 200
    assert [s["name"] for s in body["servers"]] == ["memory", "weather"]
    memory, weather = body["servers"]
    assert weather == {
        "namespace": NAMESPACE,
        "name": "weather",
        "title": "Weather",
        "description": "The weather server.",
        "tenancy": "shared",
        "url": f"{PUBLIC_BASE_URL}/mcp/tools/weather",
        "catalogEntry": "weather",
        "ready": True,
        "status": {"reason": "Ready", "message": None},
        "toolCount": 1,
        "tools": ["f"],
    }
    assert (memory["tenancy"], memory["ready"], memory["toolCount"]) == ("perUser", None, None)

    _, _, body = await get(f"{gateway.base_url}/api/servers", accountant)
    assert [s["name"] for s in body["servers"]] == ["billing"]
    _, _, body = await get(f"{gateway.base_url}/api/servers", outsider)
    assert body["servers"] == []
    _, _, body = await get(f"{gateway.base_url}/api/servers", limited)
    assert [s["name"] for s in body["servers"]] == ["memory"]


async def test_the_static_configuration_lists_its_catalog(
    gateway_factory: GatewayFactory,
) -> None:
    shim = FakeShim("http://127.0.0.1:9/mcp", generate_signing_key())
    configured = await gateway_factory(shim, catalog=[catalog_entry("time")])
    status, _, body = await get(f"{configured.base_url}/v0/servers")
    assert status == 200
    assert [s["server"]["name"] for s in body["servers"]] == ["tools/time"]
