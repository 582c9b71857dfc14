"""The MCP front door end to end: the official SDK client with an API key, through the gateway
and a real shim, to server-everything; sessions across restarts and replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from corral.gateway.routing import ROUTER
from tests.fixtures.gateway import ApiKeyMaker, GatewayFactory, on_both_fronts, round_robin
from tests.fixtures.mcp_client import mcp_session
from tests.fixtures.shim import NAMESPACE, SERVER, ShimHandle

pytest_generate_tests = on_both_fronts

ShimFactory = Callable[..., ShimHandle]
ROUTE = f"/mcp/{NAMESPACE}/{SERVER}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_full_session_through_gateway_and_shim(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    gateway = await gateway_factory(shim_factory(everything_http))
    token, _ = await api_key()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with mcp_session(gateway.mcp_url(), headers=bearer(token)) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"echo", "get-sum"} <= tools
        echoed = await session.call_tool("echo", {"message": "via gateway"})
        assert echoed.content[0].text == "Echo: via gateway"  # type: ignore[union-attr]
        await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=on_progress,
        )
    assert progress == [1, 2, 3]


async def test_every_call_makes_its_own_use_of_an_assertion(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    """One signature serves a run of the caller's calls; the shim accepts each use once, so every
    call succeeding means none was handed out twice."""
    gateway = await gateway_factory(shim_factory(everything_http))
    token, _ = await api_key()
    async with mcp_session(gateway.mcp_url(), headers=bearer(token)) as session:
        for n in range(10):
            echoed = await session.call_tool("echo", {"message": f"call {n}"})
            assert echoed.content[0].text == f"Echo: call {n}"  # type: ignore[union-attr]
    assert gateway.app[ROUTER].signer.signed < 10


async def test_a_session_continues_after_the_gateway_restarts(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    gateway = await gateway_factory(shim_factory(everything_http))
    token, _ = await api_key()
    async with mcp_session(gateway.mcp_url(), headers=bearer(token)) as session:
        await session.call_tool("echo", {"message": "before"})
        await gateway.restart()
        echoed = await session.call_tool("echo", {"message": "after restart"})
        assert echoed.content[0].text == "Echo: after restart"  # type: ignore[union-attr]


async def test_a_session_moves_between_replicas_that_share_keys(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    shim = shim_factory(everything_http)
    replicas = [await gateway_factory(shim), await gateway_factory(shim)]
    token, _ = await api_key()
    async with (
        round_robin([replica.mcp_base_url for replica in replicas]) as front,
        mcp_session(front + ROUTE, headers=bearer(token)) as session,
    ):
        for n in range(4):
            echoed = await session.call_tool("echo", {"message": f"turn {n}"})
            assert echoed.content[0].text == f"Echo: turn {n}"  # type: ignore[union-attr]
    served = [
        sum(
            value
            for (name, labels), value in _samples(replica, "corral_gateway_mcp_requests_total")
            if labels.get("method") == "POST"
        )
        for replica in replicas
    ]
    assert all(count >= 2 for count in served), served


def _samples(gateway: Any, name: str) -> list[tuple[tuple[str, dict[str, str]], float]]:
    from corral.gateway.appkeys import METRICS

    found = []
    for metric in gateway.app[METRICS].registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                found.append(((sample.name, dict(sample.labels)), sample.value))
    return found


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def initialize_raw(http: aiohttp.ClientSession, url: str, token: str) -> str:
    """Initialize over plain HTTP; the gateway's session id."""
    async with http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **bearer(token)}) as reply:
        assert reply.status == 200, await reply.text()
        session_id = reply.headers["Mcp-Session-Id"]
        await reply.read()
    return session_id


async def ping(
    http: aiohttp.ClientSession, url: str, token: str, session_id: str
) -> aiohttp.ClientResponse:
    headers = {
        **MCP_HEADERS,
        **bearer(token),
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": "2025-11-25",
    }
    message = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    async with http.post(url, json=message, headers=headers) as reply:
        await reply.read()
        return reply


async def test_a_session_id_is_refused_to_another_user_and_on_another_server(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    gateway = await gateway_factory(shim_factory(everything_http))
    alice, _ = await api_key("alice")
    mallory, _ = await api_key("mallory")
    async with aiohttp.ClientSession() as http:
        session_id = await initialize_raw(http, gateway.mcp_url(), alice)
        assert session_id.startswith("v1.")
        assert (await ping(http, gateway.mcp_url(), alice, session_id)).status == 200
        assert (await ping(http, gateway.mcp_url(), mallory, session_id)).status == 404
        other = gateway.mcp_url(server="other")
        assert (await ping(http, other, alice, session_id)).status == 404
        tampered = session_id[:-4] + ("AAAA" if not session_id.endswith("AAAA") else "BBBB")
        assert (await ping(http, gateway.mcp_url(), alice, tampered)).status == 404
        assert (await ping(http, gateway.mcp_url(), alice, session_id)).status == 200


async def test_a_key_revoked_through_one_replica_is_refused_by_the_other(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    shim = shim_factory(everything_http)
    long_cache = {"api_key_cache_ttl": 600.0}
    first = await gateway_factory(shim, gateway=long_cache)
    second = await gateway_factory(shim, gateway=long_cache)
    token, prefix = await api_key()
    admin, _ = await api_key("root", groups=("corral-admins",))
    async with mcp_session(second.mcp_url(), headers=bearer(token)) as session:
        await session.call_tool("echo", {"message": "still valid"})
    async with aiohttp.ClientSession() as http:
        async with http.delete(
            f"{first.base_url}/api/apikeys/{prefix}", headers=bearer(admin)
        ) as reply:
            assert reply.status == 204, await reply.text()
        assert await _refused_within(http, second.mcp_url(), token, seconds=10.0)
    with pytest.raises(MCPError):
        async with mcp_session(second.mcp_url(), headers=bearer(token)):
            pass


async def _refused_within(
    http: aiohttp.ClientSession, url: str, token: str, *, seconds: float
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await _status(http, url, token) == 401:
            return True
        await asyncio.sleep(0.05)
    return False


async def _status(http: aiohttp.ClientSession, url: str, token: str) -> int:
    """The status of an initialize (the key cache outlives this test, so only a revocation
    notice can turn it into 401)."""
    async with http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **bearer(token)}) as reply:
        await reply.read()
        return reply.status


async def test_a_stateless_2026_client_is_routed_without_sessions(
    shim_factory: ShimFactory,
    modern_server: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    gateway = await gateway_factory(shim_factory(modern_server))
    token, _ = await api_key()
    async with mcp_session(gateway.mcp_url(), headers=bearer(token), initialize=False) as session:
        discovered = await session.discover()
        assert "2026-07-28" in discovered.supported_versions
        echoed = await session.call_tool("echo", {"message": "stateless"})
        assert echoed.content[0].text == "Echo: stateless"  # type: ignore[union-attr]


async def test_delete_ends_the_session_for_every_replica(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    shim = shim_factory(everything_http)
    first, second = await gateway_factory(shim), await gateway_factory(shim)
    token, _ = await api_key()
    async with aiohttp.ClientSession() as http:
        session_id = await initialize_raw(http, first.mcp_url(), token)
        assert (await ping(http, second.mcp_url(), token, session_id)).status == 200
        headers = {**bearer(token), "Mcp-Session-Id": session_id}
        async with http.delete(first.mcp_url(), headers=headers) as reply:
            assert reply.status == 200
        assert (await ping(http, second.mcp_url(), token, session_id)).status == 404


async def test_a_get_stream_opens_through_the_gateway_on_the_owning_instance(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    shim = shim_factory(everything_http)
    first, second = await gateway_factory(shim), await gateway_factory(shim)
    token, _ = await api_key()
    async with aiohttp.ClientSession() as http:
        session_id = await initialize_raw(http, first.mcp_url(), token)
        headers = {
            **bearer(token),
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(second.mcp_url(), json=initialized, headers=headers) as reply:
            assert reply.status == 202
        stream_headers = {**headers, "Accept": "text/event-stream"}
        async with http.get(second.mcp_url(), headers=stream_headers) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.headers["X-Request-Id"]
