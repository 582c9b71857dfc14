"""Benchmark: `tools/call` throughput and added latency through `corral gateway` + `corral shim`,
versus the upstream directly.

Starts an embedded Postgres, a fast upstream (a minimal aiohttp MCP responder), a shim in front
of it and a gateway in front of the shim, each its own process on loopback, then measures from
this process with an API key as the bearer token:

- throughput with 16 concurrent clients, direct and through gateway + shim (target: >= 0.3x);
- p50 latency with one client, direct and through gateway + shim (target: <= 1.0 ms added);
- the gateway's and the shim's CPU time per request, which other load does not change.

Run: `.venv/bin/python bench/gateway_bench.py [--requests 4000] [--latency-requests 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import asyncpg

from bench.shim_bench import BODY, ISSUER, UPSTREAM, cpu_seconds, free_port, wait_ready
from corral.common.assertion import generate_signing_key, public_jwk
from corral.dev.postgres import embedded_postgres
from corral.gateway.signing import signing_key_pem
from corral.store import api_keys

ROUTE = "/mcp/bench/fast"
POLICY = {
    "metadata": {"name": "all", "namespace": "bench"},
    "spec": {
        "subjects": [{"group": "bench"}],
        "targets": {"servers": ["fast"]},
        "rules": [{"effect": "Allow", "methods": ["*"]}],
    },
}


async def run_clients(
    url: str, clients: int, per_client: int, token: str | None
) -> tuple[float, list[float]]:
    """(requests per second, per-request latencies in seconds)."""
    latencies: list[float] = []
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:

        async def client() -> None:
            for _ in range(per_client):
                started = loop.time()
                async with http.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(loop.time() - started)

        started = loop.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = loop.time() - started
    return clients * per_client / elapsed, latencies


def write_configs(work: Path, dsn: str, ports: dict[str, int]) -> None:
    key = generate_signing_key()
    (work / "signing.pem").write_bytes(signing_key_pem(key))
    shim = {
        "server": {"namespace": "bench", "name": "fast"},
        "listen": {"host": "127.0.0.1", "port": ports["shim"]},
        "admin": {"host": "127.0.0.1", "port": ports["admin"]},
        "upstream": {"url": f"http://127.0.0.1:{ports['upstream']}/mcp"},
        "identity": {"issuer": ISSUER, "jwks": [public_jwk(key)]},
        "policies": [POLICY],
        "audit": {"payloads": "metadata", "sink": {"kind": "stdout"}},
    }
    shim_url = f"http://127.0.0.1:{ports['shim']}/mcp"
    gateway = {
        "publicBaseUrl": f"http://127.0.0.1:{ports['gateway']}",
        "listen": {"host": "127.0.0.1", "port": ports["gateway"]},
        "database": {"dsn": {"value": dsn}},
        "identity": {"issuer": ISSUER, "signingKeys": [{"file": str(work / "signing.pem")}]},
        "sessions": {"keys": [{"value": base64.b64encode(os.urandom(32)).decode()}]},
        "edge": {"ratePerSecond": 1_000_000, "burst": 1_000_000},
        "servers": [{"namespace": "bench", "name": "fast", "url": shim_url}],
        "policies": [POLICY],
    }
    (work / "shim.json").write_text(json.dumps(shim))
    (work / "gateway.json").write_text(json.dumps(gateway))


async def create_key(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        new, _ = await api_keys.create_key(connection, user_subject="bench", groups=["bench"])
    finally:
        await connection.close()
    return new.token


def start_processes(work: Path, ports: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """Upstream, shim and gateway, each ready when this returns."""
    corral = str(Path(sys.executable).parent / "corral")
    quiet = ["--log-level", "warning"]
    processes = [
        subprocess.Popen([sys.executable, "-c", UPSTREAM, str(ports["upstream"])]),
        subprocess.Popen(
            [corral, "shim", "--config", str(work / "shim.json"), *quiet],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen([corral, "gateway", "--config", str(work / "gateway.json"), *quiet]),
    ]
    ready = [
        f"http://127.0.0.1:{ports['upstream']}/healthz",
        f"http://127.0.0.1:{ports['admin']}/readyz",
        f"http://127.0.0.1:{ports['gateway']}/readyz",
    ]
    for url, process in zip(ready, processes, strict=True):
        wait_ready(url, process)
    return processes


async def measure(args: argparse.Namespace, work: Path) -> None:
    (work / "pg").mkdir(parents=True, exist_ok=True)
    async with embedded_postgres(work / "pg") as postgres:
        ports = {name: free_port() for name in ("upstream", "shim", "admin", "gateway")}
        write_configs(work, postgres.dsn(), ports)
        processes = await asyncio.to_thread(start_processes, work, ports)
        try:
            token = await create_key(postgres.dsn())
            await report(args, ports, token, processes)
        finally:
            for process in processes:
                process.terminate()
                process.wait()


async def report(
    args: argparse.Namespace,
    ports: dict[str, int],
    token: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    direct = f"http://127.0.0.1:{ports['upstream']}/mcp"
    gateway = f"http://127.0.0.1:{ports['gateway']}{ROUTE}"
    per_client = args.requests // 16
    await run_clients(direct, 16, 50, None)
    await run_clients(gateway, 16, 50, token)
    direct_rps, _ = await run_clients(direct, 16, per_client, None)
    gateway_rps, _ = await run_clients(gateway, 16, per_client, token)
    _, direct_lat = await run_clients(direct, 1, args.latency_requests, None)
    shim_before, gateway_before = cpu_seconds(processes[1].pid), cpu_seconds(processes[2].pid)
    _, gateway_lat = await run_clients(gateway, 1, args.latency_requests, token)
    shim_cpu = (cpu_seconds(processes[1].pid) - shim_before) / args.latency_requests
    gateway_cpu = (cpu_seconds(processes[2].pid) - gateway_before) / args.latency_requests
    direct_p50 = statistics.median(direct_lat) * 1000
    gateway_p50 = statistics.median(gateway_lat) * 1000
    print(f"cores: {os.cpu_count()}")
    print(f"throughput, 16 clients: direct {direct_rps:.0f} req/s, through {gateway_rps:.0f} req/s")
    print(f"  ratio {gateway_rps / direct_rps:.2f}x (target >= 0.3x)")
    print(f"p50 latency, 1 client: direct {direct_p50:.3f} ms, gateway+shim {gateway_p50:.3f} ms")
    print(f"  added {gateway_p50 - direct_p50:.3f} ms (target <= 1.0 ms)")
    print(
        f"CPU per request (independent of other load): gateway {gateway_cpu * 1e6:.0f} us, "
        f"shim {shim_cpu * 1e6:.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per throughput run")
    parser.add_argument("--latency-requests", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(measure(args, Path(tempfile.mkdtemp(prefix="corral-gateway-bench-"))))


if __name__ == "__main__":
    main()
