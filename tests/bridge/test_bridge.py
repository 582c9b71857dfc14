"""`corral bridge` in front of real stdio servers, driven by the official SDK client."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import mcp_types as types
import orjson
import pytest

from corral.mcp.sse import SSEParser
from tests.fixtures.processes import RunningProcess
from tests.fixtures.shim import sdk_session

StartBridge = Callable[[Sequence[str]], tuple[RunningProcess, str]]


def children_of(pid: int) -> set[int]:
    """Direct children of a process, from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def poll_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll process state (which has no event to wait on) until it holds, with a deadline."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_everything_tools_resources_prompts(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    _, url = bridge_process(everything_stdio_command)
    async with sdk_session(url) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"echo", "get-sum", "get-env"} <= tools
        echoed = await session.call_tool("echo", {"message": "through the bridge"})
        assert echoed.content[0].text == "Echo: through the bridge"  # type: ignore[union-attr]
        resources = (await session.list_resources()).resources
        read = await session.read_resource(str(resources[0].uri))
        assert read.contents
        prompt = await session.get_prompt("args-prompt", {"city": "Oslo"})
        assert "Oslo" in str(prompt.messages[0].content)


async def test_progress_notifications_reach_the_caller(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    _, url = bridge_process(everything_stdio_command)
    seen: list[float] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    async with sdk_session(url) as session:
        result = await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=progress,
        )
        assert not result.is_error
    assert seen == [1, 2, 3]


async def test_sampling_and_elicitation_round_trips(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    _, url = bridge_process(everything_stdio_command)
    prompts: list[str] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        prompts.append(str(params.messages[0].content))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled"), model="m"
        )

    async def elicitation(context: Any, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="decline")

    async with sdk_session(url, sampling_callback=sampling, elicitation_callback=elicitation) as s:
        sampled = await s.call_tool("trigger-sampling-request", {"prompt": "hello there"})
        assert "sampled" in str(sampled.content)
        assert "hello there" in prompts[0]
        elicited = await s.call_tool("trigger-elicitation-request", {})
        assert "decline" in str(elicited.content)


async def test_sessions_get_their_own_processes_and_messages(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    process, url = bridge_process(everything_stdio_command)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def sampler(name: str) -> Any:
        async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
            seen[name].append(str(params.messages[0].content))
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=name), model="m"
            )

        return sampling

    async with (
        sdk_session(url, sampling_callback=sampler("a")) as a,
        sdk_session(url, sampling_callback=sampler("b")) as b,
    ):
        assert len(children_of(process.pid)) == 2
        results = await asyncio.gather(
            a.call_tool("trigger-sampling-request", {"prompt": "for a"}),
            b.call_tool("trigger-sampling-request", {"prompt": "for b"}),
        )
    assert '"text": "a"' in str(results[0].content[0].text)  # type: ignore[union-attr]
    assert '"text": "b"' in str(results[1].content[0].text)  # type: ignore[union-attr]
    assert seen["a"]
    assert seen["b"]
    assert all("for a" in text for text in seen["a"])
    assert all("for b" in text for text in seen["b"])
    await poll_until(lambda: not children_of(process.pid))


async def test_time_server_through_the_bridge(
    bridge_process: StartBridge, time_stdio_command: list[str]
) -> None:
    _, url = bridge_process(time_stdio_command)
    async with sdk_session(url) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "get_current_time" in names
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert '"timezone": "UTC"' in result.content[0].text  # type: ignore[union-attr]


async def test_a_crashed_server_fails_its_session_clearly(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    process, url = bridge_process(everything_stdio_command)
    async with sdk_session(url) as session:
        (child,) = children_of(process.pid)
        call = asyncio.ensure_future(
            session.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30})
        )
        await asyncio.sleep(0)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(Exception, match="exited with code") as info:
            await call
        assert info.value is not None
    async with sdk_session(url) as again:
        assert (await again.call_tool("echo", {"message": "back"})).content


async def test_stopping_the_bridge_ends_every_server_process(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    process, url = bridge_process(everything_stdio_command)
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 200
        assert response.headers["mcp-session-id"]
    (child,) = children_of(process.pid)
    process.stop()
    assert not alive(child)


async def test_a_legacy_sse_server_through_the_bridge(
    bridge_process: Callable[..., tuple[RunningProcess, str]], everything_sse: str
) -> None:
    _, url = bridge_process(sse_url=everything_sse)
    seen: list[float] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="via sse"), model="m"
        )

    async with (
        sdk_session(url, sampling_callback=sampling) as one,
        sdk_session(url) as two,
    ):
        echoed = await one.call_tool("echo", {"message": "legacy"})
        assert echoed.content[0].text == "Echo: legacy"  # type: ignore[union-attr]
        await two.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=progress,
        )
        sampled = await one.call_tool("trigger-sampling-request", {"prompt": "p"})
    assert seen == [1, 2, 3]
    assert "via sse" in str(sampled.content)


async def test_an_unreachable_sse_server_fails_initialize_clearly(
    bridge_process: Callable[..., tuple[RunningProcess, str]],
) -> None:
    _, url = bridge_process(sse_url="http://127.0.0.1:9/sse")
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 502
    assert "cannot reach the SSE server" in response.json()["error"]["message"]


async def test_stopping_the_bridge_ends_the_whole_process_tree(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    with_grandchild = ["sh", "-c", 'sleep 600 & exec "$0" "$@"', *everything_stdio_command]
    process, url = bridge_process(with_grandchild)
    async with sdk_session(url) as session:
        assert (await session.call_tool("echo", {"message": "tree"})).content
        (child,) = children_of(process.pid)
        grandchildren = children_of(child)
        assert grandchildren
        process.stop()
    assert not alive(child)
    assert not any(alive(pid) for pid in grandchildren)


async def test_server_stderr_goes_to_the_bridge_log(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    noisy = ["sh", "-c", 'echo "hello from stderr" >&2; exec "$0" "$@"', *everything_stdio_command]
    process, url = bridge_process(noisy)
    async with sdk_session(url) as session:
        assert (await session.call_tool("echo", {"message": "x"})).content
    process.stop()
    assert "stderr: hello from stderr" in process.log_tail(100_000)


async def test_json_only_clients_get_server_requests_on_the_get_stream(
    bridge_process: StartBridge, everything_stdio_command: list[str]
) -> None:
    _, url = bridge_process(everything_stdio_command)
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "json-only", "version": "1"},
        },
    }
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "trigger-sampling-request", "arguments": {"prompt": "json"}},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=initialize) as response:
            headers = {"Mcp-Session-Id": response.headers["Mcp-Session-Id"]}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(url, json=note, headers=headers) as response:
            assert response.status == 202
        stream = await http.get(url, headers={**headers, "Accept": "text/event-stream"})
        pending = asyncio.ensure_future(
            http.post(url, json=call, headers={**headers, "Accept": "application/json"})
        )
        parser = SSEParser()
        sampling: dict[str, Any] = {}
        try:
            async with asyncio.timeout(30):
                while not sampling:
                    for event in parser.feed(await stream.content.readany()):
                        message = orjson.loads(event.data) if event.data else {}
                        if message.get("method") == "sampling/createMessage":
                            sampling = message
        finally:
            stream.close()
            if not sampling:
                pending.cancel()
        answer = {
            "jsonrpc": "2.0",
            "id": sampling["id"],
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "answered on the side"},
                "model": "m",
            },
        }
        async with http.post(url, json=answer, headers=headers) as response:
            assert response.status == 202
        async with await pending as response:
            reply = await response.json()
    assert sampling["method"] == "sampling/createMessage"
    assert "answered on the side" in reply["result"]["content"][0]["text"]
