"""Session-era streams through the shim: resumption with Last-Event-ID (still filtered) and
session termination, against server-everything over streamable HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from corral.common.assertion import ASSERTION_HEADER
from corral.mcp.sse import SSEEvent, SSEParser
from tests.fixtures.shim import NAMESPACE, SERVER, ShimHandle

ShimFactory = Callable[..., ShimHandle]
ACCEPT = "application/json, text/event-stream"
CLIENT = {"name": "raw", "version": "1"}
DENY_GET_ENV = {
    "metadata": {"name": "no-env", "namespace": NAMESPACE},
    "spec": {
        "subjects": [{"group": "dev"}],
        "targets": {"servers": [SERVER]},
        "rules": [
            {"name": "use", "effect": "Allow", "methods": ["*"]},
            {"name": "deny-env", "effect": "Deny", "tools": ["get-env"]},
        ],
    },
}


class RawClient:
    """Speaks streamable HTTP by hand, with a fresh assertion on every request."""

    def __init__(self, http: aiohttp.ClientSession, shim: ShimHandle) -> None:
        self.http = http
        self.shim = shim
        self.session_id = ""

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {ASSERTION_HEADER: self.shim.assertion(), "Accept": ACCEPT, **extra}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
            headers["MCP-Protocol-Version"] = "2025-11-25"
        return headers

    async def initialize(self) -> None:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT}
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        async with self.http.post(self.shim.url, json=body, headers=self.headers()) as response:
            assert response.status == 200
            self.session_id = response.headers["Mcp-Session-Id"]
            await response.read()
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.http.post(self.shim.url, json=note, headers=self.headers()) as response:
            assert response.status == 202

    async def first_event(self, body: dict[str, Any]) -> SSEEvent:
        """POST a request and hang up after the stream's first event."""
        async with self.http.post(self.shim.url, json=body, headers=self.headers()) as response:
            parser = SSEParser()
            async for chunk in response.content.iter_any():
                events = parser.feed(chunk)
                if events:
                    return events[0]
        raise AssertionError("the stream ended without an event")

    async def resume_until(self, last_event_id: str, request_id: int) -> dict[str, Any]:
        """GET with Last-Event-ID until the response to `request_id` is replayed."""
        while True:
            headers = self.headers(**{"Last-Event-ID": last_event_id})
            async with self.http.get(self.shim.url, headers=headers) as response:
                assert response.status == 200
                parser = SSEParser()
                try:
                    async with asyncio.timeout(1):
                        async for chunk in response.content.iter_any():
                            for event in parser.feed(chunk):
                                last_event_id = event.id or last_event_id
                                message = orjson.loads(event.data) if event.data else {}
                                if message.get("id") == request_id:
                                    return message  # type: ignore[no-any-return]
                except TimeoutError:
                    continue


async def test_a_resumed_stream_replays_the_response_still_filtered(
    shim_factory: ShimFactory, everything_http: str
) -> None:
    shim = shim_factory(everything_http, policies=[DENY_GET_ENV])
    async with aiohttp.ClientSession() as http:
        client = RawClient(http, shim)
        await client.initialize()
        priming = await client.first_event({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
        assert priming.id
        async with asyncio.timeout(60):
            replayed = await client.resume_until(priming.id, 5)
    names = {tool["name"] for tool in replayed["result"]["tools"]}
    assert "echo" in names
    assert "get-env" not in names


async def test_deleting_a_session_ends_it(shim_factory: ShimFactory, everything_http: str) -> None:
    shim = shim_factory(everything_http)
    async with aiohttp.ClientSession() as http:
        client = RawClient(http, shim)
        await client.initialize()
        async with http.delete(shim.url, headers=client.headers()) as response:
            assert response.status == 200
        ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
        async with http.post(shim.url, json=ping, headers=client.headers()) as response:
            assert response.status == 404
