"""The pinned third-party MCP servers are real and the SDK client helpers talk to them."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from aiohttp import web
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.types import TextContent

from tests.fixtures.mcp_client import mcp_session, stdio_session

pytestmark = pytest.mark.node

SessionFactory = Callable[[], AbstractAsyncContextManager[ClientSession]]


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    texts = [block.text for block in content if isinstance(block, TextContent)]
    assert texts, f"expected text content, got {content!r}"
    return "\n".join(texts)


@pytest.fixture(params=["http", "stdio"])
def everything_session(
    request: pytest.FixtureRequest,
) -> SessionFactory:
    """Opens a session to server-everything over each transport in turn."""
    if request.param == "http":
        url: str = request.getfixturevalue("everything_http")
        return lambda: mcp_session(url)
    command: list[str] = request.getfixturevalue("everything_stdio_command")
    return lambda: stdio_session(command)


async def test_everything_lists_its_tools(everything_session: SessionFactory) -> None:
    async with everything_session() as session:
        listed = await session.list_tools()
    names = {tool.name for tool in listed.tools}
    assert {"echo", "get-sum"} <= names, sorted(names)


async def test_everything_echo_round_trips(everything_session: SessionFactory) -> None:
    async with everything_session() as session:
        result = await session.call_tool("echo", {"message": "hello corral"})
    assert not result.is_error
    assert "hello corral" in _text(result)


async def test_everything_adds(everything_session: SessionFactory) -> None:
    async with everything_session() as session:
        result = await session.call_tool("get-sum", {"a": 2, "b": 40})
    assert not result.is_error
    assert "42" in _text(result)


async def test_unknown_tool_is_an_error_result(everything_http: str) -> None:
    async with mcp_session(everything_http) as session:
        result = await session.call_tool("no-such-tool", {})
    assert result.is_error


async def test_headers_are_sent_and_http_errors_raise(unused_tcp_port: int) -> None:
    seen: list[str | None] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"error": "forbidden"}, status=403)

    app = web.Application()
    app.router.add_route("*", "/mcp", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}/mcp"
        with pytest.raises(MCPError):
            async with mcp_session(url, headers={"Authorization": "Bearer abc"}):
                pass
    finally:
        await runner.cleanup()
    assert seen == ["Bearer abc"]


async def test_http_session_reports_the_server(everything_http: str) -> None:
    async with mcp_session(everything_http) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "mcp-servers/everything"


async def test_time_server_tells_the_time(time_stdio_command: list[str]) -> None:
    async with stdio_session(time_stdio_command) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
    assert "get_current_time" in names
    assert not result.is_error
    payload = json.loads(_text(result))
    assert payload["timezone"] == "UTC"
    assert payload["datetime"].endswith("+00:00")
