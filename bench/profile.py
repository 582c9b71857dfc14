"""`python -m bench profile`: where the shim and the gateway spend their time under load.

Rule: the same stack as the overhead scenario (fast upstream, shim, gateway with auth, policy
and audit), with the shim and the gateway run under pyinstrument; wrk drives 16 connections
through gateway+shim; the text reports land in bench/.work/profile/ and their heads are printed.
"""

from __future__ import annotations

from pathlib import Path

from bench import mcpclient
from bench.common import LOOPBACK, PYTHON, ROOT, WORK, free_port, processes
from bench.corral_stack import CorralStack, embedded_postgres
from bench.wrk import run_wrk

OUT = WORK / "profile"


def profile(seconds: float) -> list[Path]:
    for old in OUT.glob("*.txt"):
        old.unlink()
    with processes("profile") as stack, embedded_postgres("profile") as dsn:
        port = free_port()
        upstream = stack.start(
            "upstream-fast", [PYTHON, "-m", "bench.upstream", str(port)], cwd=ROOT
        )
        stack.wait_http(upstream, f"http://{LOOPBACK}:{port}/healthz")
        workdir = WORK / "profile-config"
        workdir.mkdir(parents=True, exist_ok=True)
        corral = CorralStack(stack, dsn, workdir, profile_dir=OUT)
        shim = corral.start_shim("fast", f"http://{LOOPBACK}:{port}/mcp")
        gateway = corral.start_gateway()
        url = gateway.mcp_url("fast")
        headers = {"Authorization": f"Bearer {gateway.api_key}"}
        session = mcpclient.initialize(url, lambda: headers)
        load = run_wrk(
            url,
            session.body("echo", {}),
            {**headers, **session.headers},
            connections=16,
            seconds=seconds,
            target_pids={"gateway": gateway.process.pid, "shim": shim.process.pid},
        )
        print(f"gateway+shim under pyinstrument: {load.rps:.0f} req/s, non-2xx {load.non2xx}")
    return sorted(OUT.glob("*.txt"))


def main(seconds: float) -> None:
    for report in profile(seconds):
        print(f"== {report}")
        print("\n".join(report.read_text().splitlines()[:80]))
