"""`corral dev` end to end: the official SDK client through the local gateway to both example
servers, policy decisions, audit, reloads and restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from tests.dev.platform import DevPlatform
from tests.fixtures.mcp_client import mcp_session

T = TypeVar("T")
DENIED = -32003


async def eventually(attempt: Callable[[], Awaitable[T]], what: str, within: float = 60.0) -> T:
    """The first result of ``attempt`` that does not raise, polled for ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except Exception as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {within} s: {error!r}") from error
        await asyncio.sleep(0.2)


async def call(platform: DevPlatform, server: str, tool: str, args: dict[str, Any]) -> Any:
    async with mcp_session(platform.url(server), headers=platform.headers) as session:
        return await session.call_tool(tool, args)


async def tool_names(platform: DevPlatform, server: str) -> set[str]:
    async with mcp_session(platform.url(server), headers=platform.headers) as session:
        return {tool.name for tool in (await session.list_tools()).tools}


async def test_the_printed_key_lists_and_calls_tools_on_both_servers(
    platform: DevPlatform,
) -> None:
    assert {"get_current_time", "convert_time"} <= await tool_names(platform, "time")
    assert {"echo", "get-sum"} <= await tool_names(platform, "everything")

    now = await call(platform, "time", "get_current_time", {"timezone": "Europe/Paris"})
    assert not now.is_error
    assert "Europe/Paris" in now.content[0].text
    echoed = await call(platform, "everything", "echo", {"message": "hello corral"})
    assert not echoed.is_error
    assert "hello corral" in echoed.content[0].text


async def test_the_table_shows_servers_with_state_tools_and_url(platform: DevPlatform) -> None:
    lines = platform.output().splitlines()
    time_row = next(line for line in lines if line.startswith("default/time "))
    assert time_row.split()[1:] == ["uvx", "ready", "2", platform.url("time")]
    assert any(line.startswith("default/everything ") and "ready" in line for line in lines)
    assert (platform.data_dir / "admin.key").read_text().strip() == platform.key
    assert (platform.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600


async def test_a_denied_tool_is_refused_naming_the_rule(platform: DevPlatform) -> None:
    assert "get-env" not in await tool_names(platform, "everything")
    with pytest.raises(MCPError) as refused:
        await call(platform, "everything", "get-env", {})
    assert refused.value.code == DENIED
    assert "no-environment" in str(refused.value.error.data) + refused.value.error.message


async def test_the_audit_api_shows_the_calls(platform: DevPlatform) -> None:
    await call(platform, "everything", "echo", {"message": "audited"})
    with pytest.raises(MCPError):
        await call(platform, "everything", "get-env", {})

    async def audited() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(headers=platform.headers) as http:
            query = {"server": "everything", "method": "tools/call"}
            async with http.get(platform.base_url + "/api/audit", params=query) as response:
                assert response.status == 200, await response.text()
                events: list[dict[str, Any]] = (await response.json())["events"]
        tools = {event.get("tool") for event in events}
        assert {"echo", "get-env"} <= tools, tools
        return events

    events = await eventually(audited, "both calls audited")
    denied = next(e for e in events if e.get("tool") == "get-env")
    assert denied["user"] == "admin"
    assert "no-environment" in str(denied.get("decision"))


async def test_a_bad_edit_is_reported_and_the_last_good_state_keeps_running(
    platform: DevPlatform,
) -> None:
    bad = platform.manifests / "broken.yaml"
    bad.write_text(
        "apiVersion: corral.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: broken}\n"
        "spec: {runtime: {npx: {package: x}}, tenancy: private}\n"
    )
    try:
        platform.wait_for(
            lambda: "broken.yaml" in platform.output() and "tenancy" in platform.output(),
            "reporting the bad manifest",
        )
        echoed = await call(platform, "everything", "echo", {"message": "still here"})
        assert "still here" in echoed.content[0].text
    finally:
        bad.unlink()


async def test_editing_manifests_adds_a_server_and_tightens_a_policy(
    platform: DevPlatform,
) -> None:
    (platform.manifests / "memory.yaml").write_text(
        "apiVersion: corral.dev/v1alpha1\nkind: MCPServer\n"
        "metadata: {name: memory, labels: {tier: sandbox}}\n"
        "spec: {runtime: {npx: {package: '@modelcontextprotocol/server-memory@2026.8.31'}}}\n"
    )
    names = await eventually(lambda: tool_names(platform, "memory"), "memory served", 120)
    assert "read_graph" in names

    policies = platform.manifests / "policies.yaml"
    original = policies.read_text()
    tightened = original + (
        '    - name: no-echo\n      effect: Deny\n      methods: ["tools/call"]\n'
        '      tools: ["echo"]\n'
    )
    policies.write_text(tightened)
    try:

        async def echo_refused() -> MCPError:
            try:
                await call(platform, "everything", "echo", {"message": "x"})
            except MCPError as error:
                return error
            raise AssertionError("echo still allowed")

        refused = await eventually(echo_refused, "echo denied after the edit")
        assert "no-echo" in str(refused.error.data) + refused.error.message
    finally:
        policies.write_text(original)


async def test_a_killed_server_process_comes_back(platform: DevPlatform) -> None:
    bridge = platform.child_running("bridge", "mcp-server-time")
    assert bridge is not None
    os.kill(bridge.pid, signal.SIGKILL)
    platform.wait_for(lambda: "default/time server exited" in platform.output(), "a restart")

    def restarted() -> bool:
        again = platform.child_running("bridge", "mcp-server-time")
        return again is not None and again.pid != bridge.pid

    platform.wait_for(restarted, "a new time server process")
    now = await eventually(
        lambda: call(platform, "time", "get_current_time", {"timezone": "UTC"}),
        "the time server answering again",
    )
    assert not now.is_error
