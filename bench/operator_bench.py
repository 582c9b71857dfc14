"""Operator benchmark: N MCPServers from apply to all Ready on a KWOK cluster, and operator RSS.

Usage: `.venv/bin/python bench/operator_bench.py --servers 500` (target: 500 Ready in < 60 s).
Starts its own control plane (e2e.cluster) with enough fake nodes, installs the CRDs, runs
`corral operator` as a subprocess watching one namespace, creates the servers from a thread pool,
and polls the MCPServer list until every one reports Ready=True. Prints one JSON document, with
the operator's CPU time, a timeline (when the last Deployment, ReplicaSet, Pod and Ready status
appeared: which component the run waited on) and the API server's request counts.

kube-controller-manager runs with a client rate limit of 100 requests per second (burst 200)
unless `--controller-qps` says otherwise: at Kubernetes' default of 20 its Deployment and
ReplicaSet controllers alone need about 100 s for 500 Deployments (some four writes each).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corral.common.assertion import generate_signing_key, public_jwk  # noqa: E402
from e2e.cluster import launcher  # noqa: E402
from e2e.cluster.waiting import wait_for  # noqa: E402

NAMESPACE = "bench"
PODS_PER_NODE = 100
CONTROLLER_QPS = 100


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


class _PeakRss:
    """The highest RSS of a process, sampled from a thread every 0.2 s while in the block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.bytes = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.bytes = max(self.bytes, _rss_bytes(self.pid))

    def __enter__(self) -> _PeakRss:
        self.bytes = _rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, _rss_bytes(self.pid))


def _is_ready(item: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or ()
    )


def _wait_ready(custom: client.CustomObjectsApi, servers: int, deadline: float) -> None:
    """Until `servers` MCPServers report Ready=True: one list, then a watch. Polling a list of
    hundreds of servers every second would load the API server whose speed is measured."""
    args = ("corral.dev", "v1alpha1", NAMESPACE, "mcpservers")
    listing = custom.list_namespaced_custom_object(*args)
    ready = {i["metadata"]["name"] for i in listing["items"] if _is_ready(i)}
    version = listing["metadata"]["resourceVersion"]
    while len(ready) < servers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(ready)} of {servers} servers Ready at the deadline")
        stream = watch.Watch()
        for event in stream.stream(
            custom.list_namespaced_custom_object,
            *args,
            resource_version=version,
            timeout_seconds=max(1, int(min(remaining, 30))),
        ):
            body = event["object"]
            version = body["metadata"]["resourceVersion"]
            name = body["metadata"]["name"]
            if event["type"] != "DELETED" and _is_ready(body):
                ready.add(name)
            else:
                ready.discard(name)
            if len(ready) >= servers:
                stream.stop()
                break


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


def bench(servers: int, timeout: float, workdir: Path, controller_qps: int) -> dict[str, Any]:
    toolset = launcher.cache_toolset()
    nodes = max(2, -(-servers // PODS_PER_NODE) + 1)
    qps = controller_qps or None
    with launcher.ControlPlane.start(
        toolset, nodes=nodes, timeout=180, controller_api_qps=qps
    ) as plane:
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
                    os.environ.get("OPBENCH_LOG", "warning"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                cwd=ROOT,
            )
            try:
                wait_for("operator live", lambda: _answers(f"http://127.0.0.1:{live}/healthz"), 60)
                rss_idle = _rss_bytes(operator.pid)
                cpu_idle = _cpu_seconds(operator.pid)
                plane_idle = {c.name: _cpu_seconds(c.process.pid) for c in plane.components}
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
                try:
                    with _PeakRss(operator.pid) as peak:
                        _wait_ready(custom, servers, started + timeout)
                except TimeoutError:
                    print(json.dumps(_diagnosis(core, custom)), file=sys.stderr)
                    raise
                elapsed = time.monotonic() - started
                cpu = _cpu_seconds(operator.pid) - cpu_idle
                plane_cpu = {
                    c.name: round(_cpu_seconds(c.process.pid) - plane_idle[c.name], 1)
                    for c in plane.components
                }
                reconciles = _reconcile_figures(f"http://127.0.0.1:{metrics}/metrics")
                timeline = _timeline(api)
                requests = _api_requests(api)
            finally:
                operator.terminate()
                operator.wait(timeout=30)
                log.close()
    return {
        "servers": servers,
        "nodes": nodes,
        "controllerManagerQps": controller_qps or 20,
        "applySeconds": round(applied, 2),
        "allReadySeconds": round(elapsed, 2),
        "operatorRssIdleMiB": round(rss_idle / 2**20, 1),
        "operatorRssPeakMiB": round(max(rss_idle, peak.bytes) / 2**20, 1),
        "operatorCpuSeconds": round(cpu, 1),
        "controlPlaneCpuSeconds": plane_cpu,
        "loadAverage": [round(x, 2) for x in os.getloadavg()],
        "targetMet": elapsed < 60.0 if servers >= 500 else None,
        "reconciles": reconciles,
        "timeline": timeline,
        "apiRequests": requests,
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


def _stamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _last(stamps: list[float | None], first: float) -> float | None:
    known = [s for s in stamps if s is not None]
    return round(max(known) - first, 1) if known else None


def _ready_since(item: dict[str, Any]) -> str | None:
    for condition in (item.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime"))
    return None


def _timeline(api: client.ApiClient) -> dict[str, float | None]:
    """Seconds (whole-second timestamps, so +-1 s) from the first MCPServer's creation until the
    last of each stage: which component the run waited on."""

    def items(path: str) -> list[dict[str, Any]]:
        response = api.call_api(*api.param_serialize("GET", path, auth_settings=["BearerToken"]))
        response.read()
        found: list[dict[str, Any]] = orjson.loads(response.data)["items"]
        return found

    base = f"/namespaces/{NAMESPACE}"
    servers = items(f"/apis/corral.dev/v1alpha1{base}/mcpservers")
    created = [_stamp(s["metadata"]["creationTimestamp"]) for s in servers]
    first = min(s for s in created if s is not None)
    pods = items(f"/api/v1{base}/pods")
    return {
        "lastServerCreated": _last(created, first),
        "lastDeploymentCreated": _last(
            [
                _stamp(d["metadata"]["creationTimestamp"])
                for d in items(f"/apis/apps/v1{base}/deployments")
            ],
            first,
        ),
        "lastReplicaSetCreated": _last(
            [
                _stamp(r["metadata"]["creationTimestamp"])
                for r in items(f"/apis/apps/v1{base}/replicasets")
            ],
            first,
        ),
        "lastPodCreated": _last([_stamp(p["metadata"]["creationTimestamp"]) for p in pods], first),
        "lastPodReady": _last([_stamp(_ready_since(p)) for p in pods], first),
        "lastServerReady": _last([_stamp(_ready_since(s)) for s in servers], first),
    }


def _api_requests(api: client.ApiClient) -> dict[str, str]:
    """Requests the API server answered since it started, by verb and resource (every client:
    the operator, the controllers, the scheduler, KWOK and this script), the busiest first, each
    as "count, mean milliseconds"."""
    response = api.call_api(*api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    response.read()
    counts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for line in response.data.decode().splitlines():
        for metric, into in (
            ("apiserver_request_total{", counts),
            ("apiserver_request_duration_seconds_sum{", seconds),
        ):
            if not line.startswith(metric):
                continue
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
            )
            verb = labels.get("verb", "").strip('"')
            if verb in ("WATCH", "CONNECT"):
                continue
            resource = labels.get("resource", "").strip('"')
            sub = labels.get("subresource", "").strip('"')
            key = f"{verb} {resource}/{sub}" if sub else f"{verb} {resource}"
            into[key] = into.get(key, 0) + float(line.rsplit(" ", 1)[1])
    busiest = sorted(counts.items(), key=lambda kv: -kv[1])
    return {
        key: f"{count:.0f}, {1000 * seconds.get(key, 0) / count:.0f} ms"
        for key, count in busiest
        if count >= 50
    }


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
    parser.add_argument(
        "--controller-qps",
        type=int,
        default=CONTROLLER_QPS,
        help="kube-controller-manager's client rate limit (0: Kubernetes' default of 20)",
    )
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        document = bench(args.servers, args.timeout, args.workdir, args.controller_qps)
        print(json.dumps(document, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="corral-operator-bench-") as tmp:
        document = bench(args.servers, args.timeout, Path(tmp), args.controller_qps)
        print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
