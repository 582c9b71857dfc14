"""Configuration reload without dropping sessions, and stdio servers through bridge and shim."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from corral.common.assertion import ASSERTION_HEADER
from tests.fixtures.processes import RunningProcess, free_port
from tests.fixtures.shim import NAMESPACE, SERVER, RecordingUpstream, ShimHandle, sdk_session

ShimFactory = Callable[..., ShimHandle]
StartBridge = Callable[[Sequence[str]], tuple[RunningProcess, str]]

DENY_ECHO = {
    "metadata": {"name": "tight", "namespace": NAMESPACE},
    "spec": {
        "subjects": [{"group": "dev"}],
        "targets": {"servers": [SERVER]},
        "rules": [
            {"name": "use", "effect": "Allow", "methods": ["*"]},
            {"name": "no-echo", "effect": "Deny", "tools": ["echo"]},
        ],
    },
}


async def test_policy_change_applies_to_an_open_session(
    shim_factory: ShimFactory, everything_http: str
) -> None:
    shim = shim_factory(everything_http)
    async with sdk_session(shim.url, auth=shim.auth()) as session:
        assert not (await session.call_tool("echo", {"message": "before"})).is_error
        shim.rewrite(policies=[DENY_ECHO])
        denial: MCPError | None = None
        async with asyncio.timeout(30):
            while denial is None:
                try:
                    await session.call_tool("echo", {"message": "after"})
                except MCPError as error:
                    denial = error
                else:
                    await asyncio.sleep(0.1)
        assert "tight" in str(denial)
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "echo" not in names
        assert "get-sum" in names


async def test_a_broken_config_keeps_the_running_one(
    shim_factory: ShimFactory, everything_http: str
) -> None:
    shim = shim_factory(everything_http)
    shim.config_path.write_text("identity: [not, a, mapping")
    async with sdk_session(shim.url, auth=shim.auth()) as session:
        assert not (await session.call_tool("echo", {"message": "still"})).is_error


@pytest.mark.parametrize("server", ["everything", "time"])
async def test_stdio_servers_through_bridge_and_shim(
    shim_factory: ShimFactory,
    bridge_process: StartBridge,
    everything_stdio_command: list[str],
    time_stdio_command: list[str],
    server: str,
) -> None:
    command = everything_stdio_command if server == "everything" else time_stdio_command
    _, bridge_url = bridge_process(command)
    shim = shim_factory(bridge_url)
    seen: list[str] = []
    progress: list[float] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        seen.append(str(params.messages[0].content))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="ok"), model="m"
        )

    async def elicitation(context: Any, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="decline")

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with sdk_session(
        shim.url,
        auth=shim.auth(),
        sampling_callback=sampling,
        elicitation_callback=elicitation,
    ) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        if server == "time":
            result = await session.call_tool("get_current_time", {"timezone": "UTC"})
            assert '"timezone": "UTC"' in result.content[0].text  # type: ignore[union-attr]
            return
        assert "echo" in names
        resources = (await session.list_resources()).resources
        assert (await session.read_resource(str(resources[0].uri))).contents
        prompt = await session.get_prompt("args-prompt", {"city": "Bergen"})
        assert "Bergen" in str(prompt.messages[0].content)
        await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=on_progress,
        )
        sampled = await session.call_tool("trigger-sampling-request", {"prompt": "bridged"})
        elicited = await session.call_tool("trigger-elicitation-request", {})
    assert not sampled.is_error
    assert "bridged" in seen[0]
    assert "decline" in str(elicited.content)
    assert progress == [1, 2, 3]


async def test_a_missing_upstream_makes_the_shim_unready_and_calls_fail_clearly(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    shim.rewrite(upstream={"url": f"http://127.0.0.1:{free_port()}/mcp"})
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"{shim.admin_url}/readyz") as response:
                    if response.status == 503:
                        reason = (await response.json())["reason"]
                        break
                await asyncio.sleep(0.1)
        body = {"jsonrpc": "2.0", "id": 4, "method": "ping"}
        headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
        async with http.post(shim.url, json=body, headers=headers) as response:
            assert response.status == 502
            reply = await response.json()
    assert "does not accept connections" in reason
    assert reply["error"]["code"] == -32004
    assert reply["id"] == 4
