"""The 2026-07-28 stateless era through the shim: discover, header checks, policy, filtering."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.shim import NAMESPACE, SERVER, ShimHandle

ShimFactory = Callable[..., ShimHandle]
DENY_SECRET = {
    "metadata": {"name": "no-secret", "namespace": NAMESPACE},
    "spec": {
        "subjects": [{"group": "dev"}],
        "targets": {"servers": [SERVER]},
        "rules": [
            {"name": "use", "effect": "Allow", "methods": ["*"]},
            {"name": "deny-secret", "effect": "Deny", "tools": ["secret"]},
        ],
    },
}


async def test_stateless_client_through_the_shim(
    shim_factory: ShimFactory, modern_server: str
) -> None:
    shim = shim_factory(modern_server, policies=[DENY_SECRET])
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(auth=shim.auth()))
        read, write = await stack.enter_async_context(
            streamable_http_client(shim.url, http_client=http)
        )
        session = await stack.enter_async_context(ClientSession(read, write))
        discovered = await session.discover()
        assert "2026-07-28" in discovered.supported_versions
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert names == {"echo"}
        echoed = await session.call_tool("echo", {"message": "stateless"})
        assert echoed.content[0].text == "Echo: stateless"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="no-secret"):
            await session.call_tool("secret", {})
