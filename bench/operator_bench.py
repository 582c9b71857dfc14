"""Operator benchmark: N MCPServers from apply to all Ready on a KWOK cluster, and operator RSS.

Usage: `.venv/bin/python bench/operator_bench.py --servers 500` (target: 500 Ready in < 60 s).
Starts its own control plane (e2e.cluster) with enough fake nodes, installs the CRDs, runs
`corral operator` as a subprocess watching one namespace, creates the servers from a thread pool,
and polls the MCPServer list until every one reports Ready=True. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corral.common.assertion import generate_signing_key, public_jwk  # noqa: E402
from e2e.cluster import launcher  # noqa: E402
from e2e.cluster.waiting import wait_for  # noqa: E402

NAMESPACE = "bench"
PODS_PER_NODE = 100


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": f"bench-{index:04d}"},
        "spec": {"runtime": {"container": {"image": "ghcr.io/example/mcp:1", "port": 3000}}},
    }


def _ready(custom: client.CustomObjectsApi) -> int:
    items = custom.list_namespaced_custom_object("corral.dev", "v1alpha1", NAMESPACE, "mcpservers")[
        "items"
    ]
    return sum(
        1
        for item in items
        for c in (item.get("status") or {}).get("conditions") or ()
        if c.get("type") == "Ready" and c.get("status") == "True"
    )


def bench(servers: int, timeout: float, workdir: Path) -> dict[str, Any]:
    toolset = launcher.cache_toolset()
    nodes = max(2, -(-servers // PODS_PER_NODE) + 1)
    with launcher.ControlPlane.start(toolset, nodes=nodes, timeout=180) as plane:
        cluster = plane.cluster
        for path in (ROOT / "crds", ROOT / "config" / "rbac" / "peering-crds.yaml"):
            cluster.run_kubectl("apply", "--server-side", "-f", str(path))
        cluster.run_kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")
        jwks = workdir / "jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [public_jwk(generate_signing_key())]}))
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            core.create_namespace({"metadata": {"name": NAMESPACE}})
            live, metrics = _free_port(), _free_port()
            log = (workdir / "operator.log").open("wb")
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corral.operator",
                    "--namespace",
                    NAMESPACE,
                    "--standalone",
                    "--gateway-jwks-file",
                    str(jwks),
                    "--liveness",
                    f"http://127.0.0.1:{live}/healthz",
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(metrics),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                cwd=ROOT,
            )
            try:
                wait_for("operator live", lambda: _answers(f"http://127.0.0.1:{live}/healthz"), 60)
                rss_idle = _rss_bytes(operator.pid)
                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=16) as pool:
                    list(
                        pool.map(
                            lambda i: custom.create_namespaced_custom_object(
                                "corral.dev", "v1alpha1", NAMESPACE, "mcpservers", _server(i)
                            ),
                            range(servers),
                        )
                    )
                applied = time.monotonic() - started
                peak = [rss_idle]

                def all_ready() -> bool:
                    peak[0] = max(peak[0], _rss_bytes(operator.pid))
                    return _ready(custom) == servers

                try:
                    wait_for(f"{servers} servers Ready", all_ready, timeout, interval=1.0)
                except TimeoutError:
                    print(json.dumps(_diagnosis(core, custom)), file=sys.stderr)
                    raise
                elapsed = time.monotonic() - started
                reconciles = _reconcile_figures(f"http://127.0.0.1:{metrics}/metrics")
            finally:
                operator.terminate()
                operator.wait(timeout=30)
                log.close()
    return {
        "servers": servers,
        "nodes": nodes,
        "applySeconds": round(applied, 2),
        "allReadySeconds": round(elapsed, 2),
        "operatorRssIdleMiB": round(rss_idle / 2**20, 1),
        "operatorRssPeakMiB": round(peak[0] / 2**20, 1),
        "targetMet": elapsed < 60.0 if servers >= 500 else None,
        "reconciles": reconciles,
    }


def _reconcile_figures(url: str) -> dict[str, dict[str, float]]:
    """Count and mean duration of reconciliations per kind, from the operator's /metrics."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    figures: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            name = f"corral_operator_reconcile_duration_seconds{suffix}"
            if line.startswith(name + "{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                figures.setdefault(kind, {})[suffix[1:]] = float(line.rsplit(" ", 1)[1])
    for values in figures.values():
        values["meanSeconds"] = round(values.get("sum", 0) / max(values.get("count", 1), 1), 4)
    return figures


def _diagnosis(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> dict[str, Any]:
    """Why servers are not Ready: ready servers, ready pods, and Ready nodes."""
    pods = core.list_namespaced_pod(NAMESPACE).items
    nodes = core.list_node().items
    return {
        "readyServers": _ready(custom),
        "pods": len(pods),
        "readyPods": sum(
            1
            for p in pods
            for c in p.status.conditions or ()
            if c.type == "Ready" and c.status == "True"
        ),
        "readyNodes": sum(
            1
            for n in nodes
            for c in n.status.conditions or ()
            if c.type == "Ready" and c.status == "True"
        ),
        "nodes": len(nodes),
    }


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--workdir", type=Path, help="keep the operator log here")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(bench(args.servers, args.timeout, args.workdir), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="corral-operator-bench-") as tmp:
        print(json.dumps(bench(args.servers, args.timeout, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
