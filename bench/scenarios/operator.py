"""Scenario 5: N MCPServers from apply to all Ready on the local control plane, and the
operator's memory (idle and peak).

Rule: runs bench/operator_bench.py (its own e2e.cluster control plane with KWOK nodes and
`corral operator` as a subprocess) and records the JSON document it prints.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.common import BENCH, PYTHON, ROOT
from bench.scenarios import Options, target

SERVERS = 500
QUICK_SERVERS = 20


def run(options: Options) -> dict[str, Any]:
    servers = QUICK_SERVERS if options.quick else SERVERS
    argv = [PYTHON, str(BENCH / "operator_bench.py"), "--servers", str(servers)]
    argv += ["--timeout", "900"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"operator_bench.py failed ({done.returncode}): {done.stderr[-2000:]}")
    return summarise(json.loads(done.stdout[done.stdout.index("{") :]))


def summarise(document: dict[str, Any]) -> dict[str, Any]:
    """The result document from operator_bench.py's output."""
    per_second = document["servers"] / document["allReadySeconds"]
    return {
        "figures": {
            "MCPServers": document["servers"],
            "fake nodes": document["nodes"],
            "seconds to create them all": document["applySeconds"],
            "seconds from first create to all Ready": document["allReadySeconds"],
            "servers Ready per second": round(per_second, 1),
            "operator RSS idle, MiB": document["operatorRssIdleMiB"],
            "operator RSS peak, MiB": document["operatorRssPeakMiB"],
            "operator CPU seconds": document.get("operatorCpuSeconds"),
            "kube-controller-manager client QPS": document.get("controllerManagerQps"),
        },
        "targets": [
            target(
                "MCPServers Ready per second (operator_bench.py: 500 in 60 s)",
                per_second,
                500 / 60,
                at_least=True,
            ),
            target(
                "operator RSS peak under that load",
                document["operatorRssPeakMiB"],
                200,
                at_least=False,
                unit=" MiB",
            ),
        ],
        "raw": document,
    }
