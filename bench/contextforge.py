"""IBM ContextForge (PyPI `mcp-contextforge-gateway`) as the comparison gateway.

Rule: installed into its own virtualenv under bench/.work/ (never into Corral's), run as its
documentation recommends (gunicorn with uvicorn workers, JWT auth on, preloaded app), with a
gunicorn configuration written here. Setup follows its documented API: secrets from
`init_secrets`, a token from `create_jwt_token`, `POST /gateways` for the upstream, `POST
/servers` with the upstream's tools, and clients call `/servers/<id>/mcp`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LOOPBACK, WORK, Processes, free_port

VENV = WORK / "contextforge-venv"
PACKAGE = "mcp-contextforge-gateway"
WORKERS = 2
ADMIN = "admin@example.com"

GUNICORN_CONFIG = '''
"""gunicorn settings for the benchmark's ContextForge (bind from its own settings)."""
from mcpgateway.config import settings

bind = f"{settings.host}:{settings.port}"
workers = int(__import__("os").environ.get("BENCH_WORKERS", "2"))
timeout = 600
loglevel = "warning"
preload_app = True
reuse_port = True
max_requests = 0


def post_fork(server, worker):
    """Each worker opens its own database connections after the fork."""
    from mcpgateway.db import engine

    engine.dispose(close=False)
'''


@dataclass(frozen=True)
class ContextForge:
    """A running ContextForge and the MCP endpoint of its virtual server."""

    process: subprocess.Popen[bytes]
    base_url: str
    token: str
    mcp_url: str
    tool: str
    version: str


def ensure_installed() -> Path:
    """The virtualenv's python; creates it and installs ContextForge when missing."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "gunicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PACKAGE, "gunicorn"], check=True
        )
    return python


def version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-m", "pip", "show", PACKAGE], capture_output=True, text=True, check=True
    )
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in out.stdout.splitlines()
            if line.startswith("Version:")
        ),
        "unknown",
    )


def _secrets(python: Path, workdir: Path) -> dict[str, str]:
    path = workdir / ".env.secrets"
    subprocess.run(
        [str(python), "-m", "mcpgateway.scripts.init_secrets", "--output", str(path), "--force"],
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip().strip('"') for k, v in pairs if not k.startswith("#")}


def _call(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


@dataclass(frozen=True)
class Variant:
    """How ContextForge runs: its stateful sessions live in one worker's memory (sharing them
    across workers needs Redis-backed session affinity), so stateful runs one worker and
    stateless (its default) runs several."""

    name: str
    stateful: bool
    workers: int


VARIANTS = (
    Variant("contextforge-stateful-1w", stateful=True, workers=1),
    Variant("contextforge-stateless-2w", stateful=False, workers=WORKERS),
)


def start(
    stack: Processes, upstream_url: str, name: str, tool: str, variant: Variant = VARIANTS[0]
) -> ContextForge:
    """ContextForge on a free loopback port, fronting ``upstream_url`` as a virtual server that
    exposes ``tool``."""
    python = ensure_installed()
    workdir = WORK / "contextforge" / name
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("mcp.db*"):
        stale.unlink()
    (workdir / "gunicorn.bench.py").write_text(GUNICORN_CONFIG)
    secrets = _secrets(python, workdir)
    port = free_port()
    env = {
        **secrets,
        "HOST": LOOPBACK,
        "PORT": str(port),
        "SSRF_ALLOW_LOCALHOST": "true",
        "RATE_LIMITING_ENABLED": "false",
        "USE_STATEFUL_SESSIONS": "true" if variant.stateful else "false",
        "AUTH_REQUIRED": "true",
        "MCP_CLIENT_AUTH_ENABLED": "true",
        "DATABASE_URL": f"sqlite:///{workdir / 'mcp.db'}",
        "LOG_LEVEL": "ERROR",
        "BENCH_WORKERS": str(variant.workers),
    }
    gunicorn = str(VENV / "bin" / "gunicorn")
    argv = [gunicorn, "-c", str(workdir / "gunicorn.bench.py")]
    argv += ["--worker-class", "uvicorn.workers.UvicornWorker", "--workers", str(variant.workers)]
    argv += ["--preload", "mcpgateway.main:app"]
    process = stack.start(f"contextforge-{name}", argv, env=env, cwd=workdir)
    base = f"http://{LOOPBACK}:{port}"
    stack.wait_http(process, f"{base}/health", timeout=300)
    token = (
        subprocess.run(
            [
                str(python),
                "-m",
                "mcpgateway.utils.create_jwt_token",
                "--username",
                ADMIN,
                "--exp",
                "10080",
                f"--secret={secrets['JWT_SECRET_KEY']}",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=workdir,
            env={**env, "PATH": str(VENV / "bin")},
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    gateway = _call(
        "POST",
        f"{base}/gateways",
        token,
        {"name": f"bench-{name}", "url": upstream_url, "transport": "STREAMABLEHTTP"},
    )
    tools = _call("GET", f"{base}/tools?limit=0", token)
    items = tools["items"] if isinstance(tools, dict) and "items" in tools else tools
    ours = [t for t in items if t.get("gatewayId", t.get("gateway_id")) == gateway["id"]]
    chosen = next(t for t in ours if t.get("originalName", t.get("name")) == tool)
    server = _call(
        "POST",
        f"{base}/servers",
        token,
        {"server": {"name": f"bench-{name}", "associated_tools": [chosen["id"]]}},
    )
    return ContextForge(
        process=process,
        base_url=base,
        token=token,
        mcp_url=f"{base}/servers/{server['id']}/mcp",
        tool=chosen["name"],
        version=version(python),
    )
