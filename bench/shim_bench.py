"""Benchmark: `tools/call` throughput and added latency through `corral shim`, versus direct.

Starts a fast upstream (a minimal aiohttp MCP responder) and a shim in front of it as separate
processes on loopback, then measures from this process:

- throughput with 16 concurrent clients, direct and through the shim (target: >= 0.45x);
- p50 latency with one client, direct and through the shim (target: <= 0.4 ms added);
- the shim's CPU time per request, which other load on the machine does not change.

Identity assertions are minted before timing starts (one per request, as the gateway does), so
their cost is the shim's verification only. Run: `.venv/bin/python bench/shim_bench.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from corral.common.assertion import (
    ASSERTION_HEADER,
    generate_signing_key,
    mint_assertion,
    public_jwk,
)

UPSTREAM = """
import sys
from aiohttp import web
import orjson

async def handle(request):
    message = orjson.loads(await request.read())
    if "id" not in message:
        return web.Response(status=202)
    reply = {"jsonrpc": "2.0", "id": message["id"],
             "result": {"content": [{"type": "text", "text": "ok"}]}}
    return web.Response(body=orjson.dumps(reply), content_type="application/json")

app = web.Application()
app.router.add_post("/mcp", handle)
app.router.add_get("/healthz", lambda request: web.json_response({}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

ISSUER = "https://bench.corral"
BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready")


async def run_clients(
    url: str, clients: int, per_client: int, tokens: list[str] | None
) -> tuple[float, list[float]]:
    """(requests per second, per-request latencies in seconds)."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(index: int) -> None:
            for n in range(per_client):
                headers = {"Content-Type": "application/json", "Accept": "application/json"}
                if tokens is not None:
                    headers[ASSERTION_HEADER] = tokens[index * per_client + n]
                started = time.perf_counter()
                async with http.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return clients * per_client / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per throughput run")
    parser.add_argument("--latency-requests", type=int, default=1000)
    args = parser.parse_args()
    key = generate_signing_key()
    audience = "corral:bench/fast"
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    upstream_port, shim_port, admin_port = free_port(), free_port(), free_port()
    config = {
        "server": {"namespace": "bench", "name": "fast"},
        "listen": {"host": "127.0.0.1", "port": shim_port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}/mcp"},
        "identity": {"issuer": ISSUER, "jwks": [public_jwk(key)]},
        "policies": [
            {
                "metadata": {"name": "all", "namespace": "bench"},
                "spec": {
                    "subjects": [{"group": "bench"}],
                    "targets": {"servers": ["fast"]},
                    "rules": [{"effect": "Allow", "methods": ["*"]}],
                },
            }
        ],
        "audit": {"payloads": "metadata", "sink": {"kind": "stdout"}},
    }
    (work / "shim.json").write_text(json.dumps(config))
    corral = str(Path(sys.executable).parent / "corral")
    processes = [
        subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)]),
        subprocess.Popen(
            [corral, "shim", "--config", str(work / "shim.json"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", processes[0])
        wait_ready(f"http://127.0.0.1:{admin_port}/readyz", processes[1])
        direct = f"http://127.0.0.1:{upstream_port}/mcp"
        shim = f"http://127.0.0.1:{shim_port}/mcp"

        def tokens(count: int) -> list[str]:
            return [
                mint_assertion(key, issuer=ISSUER, audience=audience, subject="b", groups=["bench"])
                for _ in range(count)
            ]

        per_client = args.requests // 16
        asyncio.run(run_clients(direct, 16, 50, None))
        asyncio.run(run_clients(shim, 16, 50, tokens(800)))
        direct_rps, _ = asyncio.run(run_clients(direct, 16, per_client, None))
        shim_rps, _ = asyncio.run(run_clients(shim, 16, per_client, tokens(16 * per_client)))
        upstream_before = cpu_seconds(processes[0].pid)
        _, direct_lat = asyncio.run(run_clients(direct, 1, args.latency_requests, None))
        upstream_cpu = (cpu_seconds(processes[0].pid) - upstream_before) / args.latency_requests
        latency_tokens = tokens(args.latency_requests)
        cpu_before = cpu_seconds(processes[1].pid)
        _, shim_lat = asyncio.run(run_clients(shim, 1, args.latency_requests, latency_tokens))
        shim_cpu = (cpu_seconds(processes[1].pid) - cpu_before) / args.latency_requests
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    direct_p50 = statistics.median(direct_lat) * 1000
    shim_p50 = statistics.median(shim_lat) * 1000
    print(f"cores: {os.cpu_count()}")
    print(f"throughput, 16 clients: direct {direct_rps:.0f} req/s, shim {shim_rps:.0f} req/s")
    print(f"  ratio {shim_rps / direct_rps:.2f}x (target >= 0.45x)")
    print(f"p50 latency, 1 client: direct {direct_p50:.3f} ms, shim {shim_p50:.3f} ms")
    print(f"  added {shim_p50 - direct_p50:.3f} ms (target <= 0.4 ms)")
    print(
        f"CPU per request (independent of other load): shim {shim_cpu * 1e6:.0f} us, "
        f"the minimal upstream alone {upstream_cpu * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
