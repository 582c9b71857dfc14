"""Time from `make dev` to the first successful tool call, on a warm machine.

`python -m bench.dev_startup` runs `make dev` (the venv and node_modules taken as installed)
on a temporary data directory and a free port twice: a first start (initdb, migrations, admin
key) and a restart on the same data directory. Each time it measures until the official SDK
client's first successful `tools/call` on mcp-server-time through the gateway.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _key(key_file: Path) -> str | None:
    return key_file.read_text().strip() if key_file.exists() else None


async def _first_call(url: str, key_file: Path) -> None:
    key = None
    while key is None:
        key = _key(key_file)
        await asyncio.sleep(0.05)
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        try:
            async with (
                httpx2.AsyncClient(headers=headers, timeout=10) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                result = await session.call_tool("get_current_time", {"timezone": "UTC"})
                if not result.is_error:
                    return
        except Exception:  # not up yet: try again
            pass
        await asyncio.sleep(0.05)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(data_dir: Path, port: int, log: Path) -> tuple[float, float]:
    """Seconds to the first call, and CPU seconds of the whole process tree (to its exit)."""
    flags = f"--data-dir {data_dir} --port {port}"
    argv = ["make", "-o", ".venv/.installed", "-o", "node_modules/.installed", "dev"]
    cpu_before = _children_cpu()
    began = time.monotonic()
    with log.open("ab") as out:
        make = subprocess.Popen(
            [*argv, f"DEV_FLAGS={flags}"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/mcp/default/time"
        asyncio.run(asyncio.wait_for(_first_call(url, data_dir / "admin.key"), DEADLINE))
        elapsed = time.monotonic() - began
    finally:
        os.killpg(make.pid, signal.SIGINT)
        make.wait(60)
    return elapsed, _children_cpu() - cpu_before


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="corral-dev-bench-") as base:
        data_dir = Path(base) / "data"
        log = Path(base) / "dev.log"
        first = measure(data_dir, _free_port(), log)
        again = measure(data_dir, _free_port(), log)
        link = data_dir / "postgres"
        if link.is_symlink():
            subprocess.run(["rm", "-rf", str(link.resolve())], check=False)
    for label, (elapsed, cpu) in (("fresh", first), ("existing", again)):
        print(
            f"make dev -> first tool call, {label} data dir: {elapsed:.1f} s "
            f"(CPU of the process tree until it stopped: {cpu:.1f} s)"
        )
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
