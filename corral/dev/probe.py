"""Asking a running server how many tools it has, straight at its own endpoint on loopback.

Rule: the probe talks to the server (or bridge) the shim forwards to, not through the gateway,
so the count is the server's own, before any policy. It speaks the 2025-06-18 handshake
(initialize, notifications/initialized, tools/list, following `nextCursor`), reads JSON or SSE
answers, and ends its session with DELETE.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import orjson

from corral.mcp.sse import SSEParser

PROTOCOL_VERSION = "2025-06-18"
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=2)
FIRST_CONNECT_TIMEOUT = 2.0
MAX_PAGES = 50


class ProbeError(Exception):
    """The server did not answer the handshake or tools/list as MCP."""


async def count_tools(http: aiohttp.ClientSession, url: str, startup_timeout: float) -> int:
    """How many tools the server at ``url`` lists. The first answer may take up to
    ``startup_timeout`` seconds (a bridged command starts, perhaps downloading, with its first
    session)."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "corral-dev-probe", "version": "1"},
    }
    first = aiohttp.ClientTimeout(total=startup_timeout, connect=FIRST_CONNECT_TIMEOUT)
    result, session = await _call(http, url, headers, "initialize", initialize, first)
    if session is not None:
        headers["Mcp-Session-Id"] = session
    headers["MCP-Protocol-Version"] = str(result.get("protocolVersion", PROTOCOL_VERSION))
    try:
        await _notify(http, url, headers, "notifications/initialized")
        count, cursor = 0, None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            page, _ = await _call(http, url, headers, "tools/list", params)
            count += len(page.get("tools") or ())
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return count
    finally:
        if session is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.delete(url, headers=headers, timeout=PROBE_TIMEOUT):
                    pass


async def _notify(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], method: str
) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "method": method})
    async with http.post(url, data=body, headers=headers, timeout=PROBE_TIMEOUT) as response:
        await response.read()


async def _call(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    method: str,
    params: dict[str, Any],
    limit: aiohttp.ClientTimeout = PROBE_TIMEOUT,
) -> tuple[dict[str, Any], str | None]:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    async with http.post(url, data=body, headers=headers, timeout=limit) as response:
        if response.status != 200:
            raise ProbeError(f"{method}: HTTP {response.status}")
        raw = await response.read()
        session = response.headers.get("Mcp-Session-Id")
        streamed = response.content_type == "text/event-stream"
    for message in _messages(raw, streamed):
        if message.get("id") == 1:
            if "error" in message:
                raise ProbeError(f"{method}: {message['error'].get('message')}")
            return dict(message.get("result") or {}), session
    raise ProbeError(f"{method}: no answer in the response")


def _messages(raw: bytes, streamed: bool) -> list[dict[str, Any]]:
    if not streamed:
        return [orjson.loads(raw)]
    events = SSEParser().feed(raw)
    return [orjson.loads(e.data) for e in events if e.data]
