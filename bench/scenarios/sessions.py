"""Scenario 6: gateway memory per 1,000 idle MCP sessions, and how many sessions one gateway
replica holds before one-client latency doubles.

Rule: one gateway replica in front of one shim and the fast upstream (auth, policy, audit on).
Sessions are opened the way a client opens them (initialize, then notifications/initialized,
API key as bearer) and then left idle (no open stream, connection closed). Memory is resident
set size of the gateway and of the shim before and after; latency is wrk with one connection
on a fresh session at each level of open sessions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bench.common import LOOPBACK, PYTHON, ROOT, WORK, free_port, processes, rss_bytes
from bench.corral_stack import CorralStack, embedded_postgres
from bench.mcpclient import ACCEPT, PROTOCOL, initialize
from bench.scenarios import Options
from bench.wrk import run_wrk

LEVELS = (1_000, 2_000, 5_000, 10_000, 20_000)
QUICK_LEVELS = (500, 1_000)
OPENERS = 32


async def open_sessions(url: str, api_key: str, count: int) -> int:
    """Opens ``count`` sessions; returns how many succeeded."""
    auth = {"Authorization": f"Bearer {api_key}", "Accept": ACCEPT}
    initialize_body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "corral-bench-idle", "version": "1.0"},
        },
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    opened = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=OPENERS)) as http:

        async def opener() -> None:
            nonlocal opened
            while not queue.empty():
                queue.get_nowait()
                async with http.post(url, json=initialize_body, headers=auth) as reply:
                    await reply.read()
                    session = reply.headers.get("Mcp-Session-Id")
                    version = (await reply.json(content_type=None))["result"]["protocolVersion"]
                if reply.status != 200 or session is None:
                    continue
                headers = {**auth, "Mcp-Session-Id": session, "MCP-Protocol-Version": version}
                async with http.post(url, json=initialized, headers=headers) as reply:
                    await reply.read()
                    opened += reply.status == 202

        await asyncio.gather(*(opener() for _ in range(OPENERS)))
    return opened


def p50_one_client(url: str, api_key: str, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    session = initialize(url, lambda: headers)
    load = run_wrk(
        url,
        session.body("echo", {}),
        {**headers, **session.headers},
        connections=1,
        seconds=seconds,
        target_pids=pids,
    )
    return load.as_dict()


def run(options: Options) -> dict[str, Any]:
    levels = QUICK_LEVELS if options.quick else LEVELS
    seconds = max(2.0, options.seconds / 2)
    steps: list[dict[str, Any]] = []
    with processes("sessions") as stack, embedded_postgres("sessions") as dsn:
        port = free_port()
        upstream = stack.start(
            "upstream-fast", [PYTHON, "-m", "bench.upstream", str(port)], cwd=ROOT
        )
        stack.wait_http(upstream, f"http://{LOOPBACK}:{port}/healthz")
        workdir = WORK / "sessions"
        workdir.mkdir(parents=True, exist_ok=True)
        corral = CorralStack(stack, dsn, workdir)
        shim = corral.start_shim("fast", f"http://{LOOPBACK}:{port}/mcp")
        gateway = corral.start_gateway()
        url = gateway.mcp_url("fast")
        pids = {"gateway": gateway.process.pid, "shim": shim.process.pid, "upstream": upstream.pid}
        asyncio.run(open_sessions(url, gateway.api_key, 200))
        baseline = p50_one_client(url, gateway.api_key, seconds, pids)
        rss = {"gateway": rss_bytes(gateway.process.pid), "shim": rss_bytes(shim.process.pid)}
        steps.append({"sessions": 0, **_memory(gateway.process.pid, shim.process.pid), **baseline})
        print(f"  0 sessions: p50 {baseline['p50Ms']} ms", flush=True)
        total = 0
        doubled_at = None
        for level in levels:
            total += asyncio.run(open_sessions(url, gateway.api_key, level - total))
            measured = p50_one_client(url, gateway.api_key, seconds, pids)
            memory = _memory(gateway.process.pid, shim.process.pid)
            steps.append({"sessions": total, **memory, **measured})
            print(f"  {total} sessions: p50 {measured['p50Ms']} ms, {memory}", flush=True)
            if measured["p50Ms"] >= 2 * baseline["p50Ms"]:
                again = p50_one_client(url, gateway.api_key, seconds, pids)
                steps.append({"sessions": total, "repeat": True, **memory, **again})
                if again["p50Ms"] >= 2 * baseline["p50Ms"]:
                    doubled_at = total
                    break
    first = next(s for s in steps if s["sessions"] >= 1000)
    per_thousand = {
        name: (first[f"{name}RssMiB"] - rss[name] / 2**20) * 1000 / first["sessions"]
        for name in ("gateway", "shim")
    }
    figures = {
        "gateway RSS per 1,000 idle sessions, MiB": round(per_thousand["gateway"], 2),
        "shim RSS per 1,000 idle sessions, MiB": round(per_thousand["shim"], 2),
        "sessions when one-client p50 latency doubled": doubled_at
        if doubled_at is not None
        else f"not reached at {steps[-1]['sessions']} sessions",
    }
    return {
        "figures": figures,
        "steps": steps,
        "targets": [],
    }


def _memory(gateway_pid: int, shim_pid: int) -> dict[str, float]:
    return {
        "gatewayRssMiB": round(rss_bytes(gateway_pid) / 2**20, 2),
        "shimRssMiB": round(rss_bytes(shim_pid) / 2**20, 2),
    }
