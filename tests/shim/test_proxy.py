"""The shim in front of server-everything (streamable HTTP and stdio through the bridge),
driven by the official SDK client with identity assertions minted per request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.fixtures.shim import NAMESPACE, SERVER, ShimHandle, sdk_session

ShimFactory = Callable[..., ShimHandle]


async def test_tools_resources_prompts_through_the_shim(
    shim_factory: ShimFactory, everything_http: str, log_dir: Path
) -> None:
    shim = shim_factory(everything_http)
    # Logged before the shim serves its first request, so before it was seen ready.
    assert "garbage collector: " in (log_dir / "shim.log").read_text()
    async with sdk_session(shim.url, auth=shim.auth()) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"echo", "get-sum", "get-env"} <= tools
        echoed = await session.call_tool("echo", {"message": "via shim"})
        assert echoed.content[0].text == "Echo: via shim"  # type: ignore[union-attr]
        resources = (await session.list_resources()).resources
        assert (await session.read_resource(str(resources[0].uri))).contents
        prompt = await session.get_prompt("args-prompt", {"city": "Oslo"})
        assert "Oslo" in str(prompt.messages[0].content)


async def test_progress_sampling_and_elicitation_through_the_shim(
    shim_factory: ShimFactory, everything_http: str
) -> None:
    shim = shim_factory(everything_http)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled"), model="m"
        )

    async def elicitation(context: Any, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="decline")

    async with sdk_session(
        shim.url, auth=shim.auth(), sampling_callback=sampling, elicitation_callback=elicitation
    ) as session:
        await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=on_progress,
        )
        sampled = await session.call_tool("trigger-sampling-request", {"prompt": "hi"})
        elicited = await session.call_tool("trigger-elicitation-request", {})
    assert progress == [1, 2, 3]
    assert "sampled" in str(sampled.content)
    assert "decline" in str(elicited.content)


def policy(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "limited", "namespace": NAMESPACE},
        "spec": {
            "subjects": [{"group": "dev"}],
            "targets": {"servers": [SERVER]},
            "rules": rules,
        },
    }


async def test_denied_tool_is_refused_naming_the_policy_and_hidden_from_lists(
    shim_factory: ShimFactory, everything_http: str
) -> None:
    shim = shim_factory(
        everything_http,
        policies=[
            policy(
                [
                    {"name": "use", "effect": "Allow", "methods": ["*"]},
                    {"name": "no-env", "effect": "Deny", "tools": ["get-env"]},
                ]
            )
        ],
    )
    async with sdk_session(shim.url, auth=shim.auth()) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "get-env" not in names
        assert "echo" in names
        with pytest.raises(MCPError) as info:
            await session.call_tool("get-env", {})
    assert "team/limited" in str(info.value)
    assert "no-env" in str(info.value)
