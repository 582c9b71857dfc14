"""The end-to-end assertions of tests/e2e/test_cluster_e2e.py against a real cluster, through a
port-forwarded gateway, with the official MCP SDK client (run by e2e/kind/run.sh).

Exit status 0 when every check passes; otherwise the first failed check is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

AUDIT_WAIT = 60.0


@asynccontextmanager
async def session(url: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


async def check(gateway: str, namespace: str, token: str) -> None:
    everything = f"{gateway}/mcp/{namespace}/everything"
    async with session(everything, token) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "echo" in tools, f"echo missing from {sorted(tools)}"
        assert "get-env" not in tools, "tools/list shows a tool the policy denies"
        echoed = await client.call_tool("echo", {"message": "kind"})
        assert not echoed.is_error, echoed
        try:
            denied = await client.call_tool("get-env", {})
            message = str(denied.content) if denied.is_error else "get-env was allowed"
        except MCPError as error:
            message = str(error)
        assert "no-env" in message, message
    async with session(f"{gateway}/mcp/{namespace}/time", token) as client:
        now = await client.call_tool("get_current_time", {"timezone": "UTC"})
        assert not now.is_error, now
    print("ok: tools listed, called and denied through the gateway")


def check_audit(gateway: str, token: str) -> None:
    deadline = time.monotonic() + AUDIT_WAIT
    query = urllib.parse.urlencode({"server": "everything", "target": "get-env"})
    request = urllib.request.Request(
        f"{gateway}/api/audit?{query}", headers={"Authorization": f"Bearer {token}"}
    )
    while True:
        with urllib.request.urlopen(request, timeout=10) as response:
            events = json.loads(response.read())["events"]
        if events:
            assert events[0]["decision"]["allowed"] is False, events[0]
            break
        assert time.monotonic() < deadline, "the denial never reached the audit API"
        time.sleep(1.0)
    print("ok: the audit API shows the denial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    gateway = args.gateway.rstrip("/")
    asyncio.run(check(gateway, args.namespace, args.token))
    check_audit(gateway, args.token)


if __name__ == "__main__":
    main()
