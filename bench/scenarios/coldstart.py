"""Scenario 7: cold start, the first call of a server that is not running yet.

Rule: `corral dev` runs shared servers only (perUser needs a cluster), so this measures the
closest things that exist, and says so in the result:

- `corral dev` with one stdio server (server-everything via npx, behind `corral bridge` and a
  shim): seconds from launching `corral dev` to the first successful `tools/call` through its
  gateway (embedded Postgres start included), and the first session's initialize + call;
- `corral shim` + `corral bridge` alone (what a perUser instance pod runs): the first session's
  initialize, which starts the stdio server process, and the first call, versus a warm call.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

from bench import mcpclient
from bench.common import (
    CORRAL,
    EVERYTHING,
    LOOPBACK,
    NODE,
    WORK,
    free_port,
    processes,
    wait_until,
)
from bench.corral_stack import CorralStack
from bench.scenarios import Options

SESSIONS = 5
DEV_MANIFESTS = """apiVersion: corral.dev/v1alpha1
kind: MCPServer
metadata:
  name: everything
spec:
  runtime:
    npx:
      package: "@modelcontextprotocol/server-everything@2026.8.31"
      args: ["stdio"]
---
apiVersion: corral.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: bench
spec:
  subjects:
    - group: corral-admins
  targets:
    servers: ["everything"]
  rules:
    - effect: Allow
      methods: ["*"]
"""


def timed_session(url: str, headers: Any) -> dict[str, float]:
    """Seconds for initialize (which starts the stdio server) and for the first and a warm
    tools/call in that session."""
    started = time.perf_counter()
    session = mcpclient.initialize(url, headers)
    initialized = time.perf_counter()
    mcpclient.call_once(url, session, headers(), "echo", {"message": "cold"})
    first = time.perf_counter()
    warm = []
    for _ in range(10):
        before = time.perf_counter()
        mcpclient.call_once(url, session, headers(), "echo", {"message": "warm"})
        warm.append(time.perf_counter() - before)
    return {
        "initializeMs": round((initialized - started) * 1000, 1),
        "firstCallMs": round((first - initialized) * 1000, 1),
        "warmCallMs": round(statistics.median(warm) * 1000, 2),
    }


def shim_and_bridge(options: Options) -> dict[str, Any]:
    with processes("coldstart") as stack:
        workdir = WORK / "coldstart"
        workdir.mkdir(parents=True, exist_ok=True)
        bridge_port = free_port()
        launched = time.perf_counter()
        server = [str(NODE), str(EVERYTHING), "stdio"]
        bridge = stack.start(
            "bridge",
            [CORRAL, "bridge", "--port", str(bridge_port), "--log-level", "warning", "--", *server],
        )
        corral = CorralStack(stack, "", workdir)
        shim = corral.start_shim("everything", f"http://{LOOPBACK}:{bridge_port}/mcp", False)
        stack.wait_http(bridge, f"http://{LOOPBACK}:{bridge_port}/mcp")
        ready = time.perf_counter()
        sessions = [
            timed_session(shim.url, lambda: {"Corral-Identity-Assertion": shim.assertion()})
            for _ in range(2 if options.quick else SESSIONS)
        ]
    return {
        "processesReadyMs": round((ready - launched) * 1000, 1),
        "sessions": sessions,
        "medianInitializeMs": statistics.median(s["initializeMs"] for s in sessions),
        "medianFirstCallMs": statistics.median(s["firstCallMs"] for s in sessions),
        "medianWarmCallMs": statistics.median(s["warmCallMs"] for s in sessions),
    }


def corral_dev() -> dict[str, Any]:
    base = WORK / "coldstart-dev"
    manifests = base / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "everything.yaml").write_text(DEV_MANIFESTS)
    data = base / "data"
    port = free_port()
    with processes("coldstart-dev") as stack:
        launched = time.perf_counter()
        process = stack.start(
            "corral-dev",
            [CORRAL, "dev", str(manifests), "--data-dir", str(data), "--port", str(port)],
            env={"PYTHONUNBUFFERED": "1"},
        )
        log = stack.logs / "corral-dev.log"
        key: list[str] = []

        def key_printed() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"corral dev exited: {log.read_text()[-2000:]}")
            for line in log.read_text().splitlines():
                if line.startswith("API key (admin):"):
                    key.append(line.split(":", 1)[1].strip())
                    return True
            return False

        wait_until(key_printed, "corral dev to print the admin API key", timeout=300)
        printed = time.perf_counter()
        url = f"http://{LOOPBACK}:{port}/mcp/default/everything"
        headers = {"Authorization": f"Bearer {key[0]}"}
        first = timed_session(url, lambda: headers)
        done = time.perf_counter()
        second = timed_session(url, lambda: headers)
    return {
        "launchToReadyMs": round((printed - launched) * 1000, 1),
        "launchToFirstCallMs": round((done - launched) * 1000, 1),
        "firstSession": first,
        "secondSession": second,
    }


def run(options: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"notes": [], "figures": {}}
    result["notes"].append(
        "corral dev runs shared servers only (perUser needs a cluster): measured the first "
        "call of a server under corral dev and the shim+bridge pair a perUser instance runs"
    )
    pair = shim_and_bridge(options)
    result["shimAndBridge"] = pair
    result["figures"].update(
        {
            "shim+bridge: processes launched to ready, ms": pair["processesReadyMs"],
            "shim+bridge: initialize that starts the stdio server, median ms": pair[
                "medianInitializeMs"
            ],
            "shim+bridge: first tools/call in a new session, median ms": pair["medianFirstCallMs"],
            "shim+bridge: warm tools/call, median ms": pair["medianWarmCallMs"],
        }
    )
    try:
        dev = corral_dev()
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        result["notes"].append(f"corral dev could not be measured: {error}")
    else:
        result["corralDev"] = dev
        result["figures"].update(
            {
                "corral dev: launch to servers ready (API key printed), ms": dev["launchToReadyMs"],
                "corral dev: launch to first successful tools/call, ms": dev["launchToFirstCallMs"],
                "corral dev: first session initialize + first call, ms": dev["firstSession"][
                    "initializeMs"
                ]
                + dev["firstSession"]["firstCallMs"],
                "corral dev: warm tools/call, ms": dev["secondSession"]["warmCallMs"],
            }
        )
    return result
