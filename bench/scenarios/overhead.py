"""Scenarios 1 and 2: MCP `tools/call` overhead, direct versus `corral shim` versus Corral's
gateway + shim (API key auth, policy, audit into Postgres on) versus IBM ContextForge, in one run.

Rule: the same upstream process serves every path of one comparison; the load is wrk (one
connection for latency, 16 and 64 for throughput); every run reports non-2xx answers and the CPU
of wrk and of the processes on the path, so a saturated generator or a failing path is visible.
Two upstreams: the minimal fast one (bench/upstream.py) and server-everything's `echo`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import contextforge, mcpclient
from bench.common import (
    EVERYTHING,
    LOOPBACK,
    NODE,
    PYTHON,
    ROOT,
    WORK,
    free_port,
    processes,
    wait_until,
)
from bench.corral_stack import CorralStack, embedded_postgres
from bench.scenarios import Options, target
from bench.wrk import Load, run_wrk

CONNECTIONS = (1, 16, 64)
ASSERTION_HEADER = "Corral-Identity-Assertion"


@dataclass(frozen=True)
class Path:
    """One way to reach the upstream: URL, static headers, per-request assertion minting."""

    name: str
    url: str
    headers: dict[str, str]
    pids: dict[str, int]
    mint: Callable[[], str] | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    pid: int
    tool: str
    arguments: dict[str, Any]


def start_upstreams(stack: Any) -> list[Upstream]:
    fast_port, everything_port = free_port(), free_port()
    fast = stack.start("upstream-fast", [PYTHON, "-m", "bench.upstream", str(fast_port)], cwd=ROOT)
    everything = stack.start(
        "upstream-everything",
        [str(NODE), str(EVERYTHING), "streamableHttp"],
        env={"PORT": str(everything_port)},
    )
    stack.wait_http(fast, f"http://{LOOPBACK}:{fast_port}/healthz")
    stack.wait_http(everything, f"http://{LOOPBACK}:{everything_port}/mcp")
    return [
        Upstream("fast", f"http://{LOOPBACK}:{fast_port}/mcp", fast.pid, "echo", {}),
        Upstream(
            "everything",
            f"http://{LOOPBACK}:{everything_port}/mcp",
            everything.pid,
            "echo",
            {"message": "hello"},
        ),
    ]


def measure(
    path: Path,
    tool: str,
    arguments: dict[str, Any],
    options: Options,
    direct: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Open a session, check one call works, then one wrk run per connection count. Paths that
    need an assertion per request get 1.5 times as many as the direct run of the same
    connection count completed (a proxy in front cannot be faster than the server behind it)."""

    def fresh() -> dict[str, str]:
        extra = {} if path.mint is None else {ASSERTION_HEADER: path.mint()}
        return {**path.headers, **extra}

    session = mcpclient.initialize(path.url, fresh)
    for _ in range(4):
        mcpclient.call_once(path.url, session, fresh(), tool, arguments)
    body = session.body(tool, arguments)
    headers = {**path.headers, **session.headers}
    runs: dict[str, Any] = {}
    for connections in CONNECTIONS:
        tokens = None
        if path.mint is not None:
            ceiling = (direct or {}).get(f"c{connections}", {}).get("rps", 12_000.0)
            count = int(options.seconds * ceiling * 1.5) + 1000
            tokens = [path.mint() for _ in range(count)]
        load = run_wrk(
            path.url,
            body,
            headers,
            connections=connections,
            seconds=options.seconds,
            target_pids=path.pids,
            tokens=tokens,
            token_header=ASSERTION_HEADER,
        )
        runs[f"c{connections}"] = load.as_dict()
        print(f"  {path.name:<13} c={connections:<3} {_line(load)}", flush=True)
    return runs


def _line(load: Load) -> str:
    return (
        f"{load.rps:>8.0f} req/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  "
        f"non2xx {load.non2xx}  wrk cpu {load.wrk_cpu_percent:4.0f}%  "
        f"path cpu {load.target_cpu_percent:4.0f}%"
    )


def run(options: Options) -> dict[str, Any]:
    results: dict[str, Any] = {"upstreams": {}, "notes": []}
    with processes("overhead") as stack, embedded_postgres("overhead") as dsn:
        upstreams = start_upstreams(stack)
        workdir = WORK / "overhead"
        workdir.mkdir(parents=True, exist_ok=True)
        corral = CorralStack(stack, dsn, workdir)
        for upstream in upstreams:
            corral.start_shim(upstream.name, upstream.url)
        gateway = corral.start_gateway()
        forges: dict[tuple[str, str], contextforge.ContextForge] = {}
        for upstream in upstreams:
            for variant in contextforge.VARIANTS:
                try:
                    forges[upstream.name, variant.name] = contextforge.start(
                        stack,
                        upstream.url,
                        f"{upstream.name}-{variant.name}",
                        upstream.tool,
                        variant,
                    )
                except Exception as error:
                    results["notes"].append(
                        f"{variant.name} for {upstream.name} failed to start: {error}"
                    )
        if forges:
            results["contextforge"] = {
                "version": next(iter(forges.values())).version,
                "variants": [vars(v) for v in contextforge.VARIANTS],
            }
        for upstream in upstreams:
            print(f"upstream {upstream.name}", flush=True)
            shim = corral.shims[upstream.name]
            paths = [
                Path("direct", upstream.url, {}, {"upstream": upstream.pid}),
                Path(
                    "shim",
                    shim.url,
                    {},
                    {"shim": shim.process.pid, "upstream": upstream.pid},
                    shim.assertion,
                ),
                Path(
                    "gateway+shim",
                    gateway.mcp_url(upstream.name),
                    {"Authorization": f"Bearer {gateway.api_key}"},
                    {
                        "gateway": gateway.process.pid,
                        "shim": shim.process.pid,
                        "upstream": upstream.pid,
                    },
                ),
            ]
            tools = {}
            for (name, variant), forge in forges.items():
                if name == upstream.name:
                    tools[variant] = forge.tool
                    paths.append(
                        Path(
                            variant,
                            forge.mcp_url,
                            {"Authorization": f"Bearer {forge.token}"},
                            {"contextforge": forge.process.pid, "upstream": upstream.pid},
                        )
                    )
            measured: dict[str, Any] = {}
            for path in paths:
                tool = tools.get(path.name, upstream.tool)
                try:
                    measured[path.name] = measure(
                        path, tool, upstream.arguments, options, measured.get("direct")
                    )
                except Exception as error:
                    results["notes"].append(f"{upstream.name} via {path.name} failed: {error}")
            results["upstreams"][upstream.name] = measured
        wait_until(
            lambda: all(corral.audit_counts().get(u.name, 0) > 0 for u in upstreams),
            "audit events from every shim in Postgres",
            timeout=30,
        )
        results["auditEventsStored"] = corral.audit_counts()
    results["targets"] = targets(results["upstreams"].get("fast", {}))
    results["ratios"] = ratios(results["upstreams"])
    results["figures"] = generator_headroom(results["upstreams"])
    return results


def generator_headroom(upstreams: dict[str, Any]) -> dict[str, Any]:
    """How far wrk was from saturating: its busiest run, and the request rate its CPU per
    request would allow on its two threads (compared with the fastest rate measured)."""
    runs = [run for paths in upstreams.values() for p in paths.values() for run in p.values()]
    if not runs:
        return {}
    busiest = max(runs, key=lambda run: run["wrkCpuPercent"])
    fastest = max(runs, key=lambda run: run["rps"])
    per_request = fastest["wrkCpuPercent"] / 100 / fastest["rps"] if fastest["rps"] else 0.0
    capacity = 2 / per_request if per_request else float("inf")
    return {
        "wrk CPU, busiest run, % of one core": busiest["wrkCpuPercent"],
        "fastest measured rate, req/s": fastest["rps"],
        "wrk capacity at its CPU per request (2 threads), req/s": round(capacity),
    }


def _best_forge(measured: dict[str, Any], connections: int) -> str:
    """The ContextForge variant with the most successful calls at this connection count."""
    names = [name for name in measured if name.startswith("contextforge")]
    return max(
        names,
        key=lambda name: measured[name].get(f"c{connections}", {}).get("okRps", 0.0),
        default="contextforge",
    )


def _rps(measured: dict[str, Any], path: str, connections: int) -> float | None:
    """Successful (2xx) requests per second."""
    if path == "contextforge":
        path = _best_forge(measured, connections)
    run = measured.get(path, {}).get(f"c{connections}")
    return None if run is None else float(run["okRps"])


def _cpu_us(measured: dict[str, Any], path: str, connections: int) -> float | None:
    """CPU time per request of every process on the path."""
    if path == "contextforge":
        path = _best_forge(measured, connections)
    run = measured.get(path, {}).get(f"c{connections}")
    return None if run is None else float(sum(run["cpuUsPerRequest"].values()))


def ratios(upstreams: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, measured in upstreams.items():
        for connections in CONNECTIONS:
            direct = _rps(measured, "direct", connections)
            for path in ("shim", "gateway+shim", "contextforge"):
                value = _rps(measured, path, connections)
                if direct and value:
                    found[f"{name}/c{connections}/{path}:direct"] = round(value / direct, 3)
            corral = _rps(measured, "gateway+shim", connections)
            forge = _rps(measured, "contextforge", connections)
            if corral and forge:
                found[f"{name}/c{connections}/corral:contextforge"] = round(corral / forge, 2)
            direct_cpu = _cpu_us(measured, "direct", connections)
            for path in ("shim", "gateway+shim", "contextforge"):
                cpu = _cpu_us(measured, path, connections)
                if direct_cpu and cpu:
                    key = f"{name}/c{connections}/{path}:direct by CPU per request"
                    found[key] = round(direct_cpu / cpu, 3)
    return found


def targets(fast: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    direct16 = _rps(fast, "direct", 16)
    gateway16 = _rps(fast, "gateway+shim", 16)
    shim16 = _rps(fast, "shim", 16)
    forge16 = _rps(fast, "contextforge", 16)
    if direct16 and gateway16:
        found.append(
            target("gateway+shim / direct, 16 clients", gateway16 / direct16, 0.3, at_least=True)
        )
    if gateway16 and forge16:
        found.append(
            target(
                "gateway+shim / ContextForge, 16 clients", gateway16 / forge16, 30, at_least=True
            )
        )
    if direct16 and shim16:
        found.append(target("shim / direct, 16 clients", shim16 / direct16, 0.45, at_least=True))
    direct_cpu, gateway_cpu = _cpu_us(fast, "direct", 16), _cpu_us(fast, "gateway+shim", 16)
    shim_cpu, forge_cpu = _cpu_us(fast, "shim", 16), _cpu_us(fast, "contextforge", 16)
    if direct_cpu and gateway_cpu:
        found.append(
            target(
                "gateway+shim / direct by CPU per request (load-independent), 16 clients",
                direct_cpu / gateway_cpu,
                0.3,
                at_least=True,
            )
        )
    if direct_cpu and shim_cpu:
        found.append(
            target(
                "shim / direct by CPU per request (load-independent), 16 clients",
                direct_cpu / shim_cpu,
                0.45,
                at_least=True,
            )
        )
    if forge_cpu and gateway_cpu:
        found.append(
            target(
                "gateway+shim / ContextForge by CPU per request, 16 clients",
                forge_cpu / gateway_cpu,
                30,
                at_least=True,
            )
        )
    direct1 = fast.get("direct", {}).get("c1")
    gateway1 = fast.get("gateway+shim", {}).get("c1")
    if direct1 and gateway1:
        added = gateway1["p50Ms"] - direct1["p50Ms"]
        found.append(
            target("p50 added by gateway+shim, 1 client", added, 1.0, at_least=False, unit=" ms")
        )
    shim1 = fast.get("shim", {}).get("c1")
    if direct1 and shim1:
        added = shim1["p50Ms"] - direct1["p50Ms"]
        found.append(
            target("p50 added by the shim, 1 client", added, 0.4, at_least=False, unit=" ms")
        )
    return found
