"""``corral gateway`` as a real process from a config file, in front of a real shim; the key
tools (``jwks``, ``new-signing-key``, ``new-session-key``) and config errors."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from corral.common.assertion import generate_signing_key, public_jwk
from corral.gateway.command import gateway
from corral.gateway.config import ConfigError, load_config, to_settings
from corral.gateway.signing import load_signing_key, signing_key_pem
from tests.fixtures.gateway import ApiKeyMaker, FakeShim, Upstream
from tests.fixtures.mcp_client import mcp_session
from tests.fixtures.processes import free_port
from tests.fixtures.shim import ISSUER, NAMESPACE, SERVER, ShimHandle, run_corral

ShimFactory = Callable[..., ShimHandle]


def write_config(directory: Path, shim: Upstream, dsn: str, **extra: Any) -> Path:
    key_file = directory / "signing.pem"
    key_file.write_bytes(signing_key_pem(shim.key))
    config = {
        "publicBaseUrl": "https://corral.test",
        "database": {"dsn": {"value": dsn}, "maxSize": 4},
        "identity": {"issuer": ISSUER, "signingKeys": [{"file": str(key_file)}]},
        "sessions": {"keys": [{"value": base64.b64encode(os.urandom(32)).decode()}]},
        "servers": [{"namespace": NAMESPACE, "name": SERVER, "url": shim.url}],
        **extra,
    }
    path = directory / "gateway.yaml"
    path.write_bytes(orjson.dumps(config))
    return path


@pytest.mark.parametrize("front", ["app", "lean"])
async def test_corral_gateway_serves_mcp_from_its_config_file(
    shim_factory: ShimFactory,
    everything_http: str,
    postgres_dsn: str,
    api_key: ApiKeyMaker,
    log_dir: Path,
    front: str,
) -> None:
    """MCP on the application's port, or on ``listen.mcpPort`` (which serves nothing else)."""
    shim = shim_factory(everything_http)
    config_path = write_config(log_dir, shim, postgres_dsn)
    mcp_port = free_port() if front == "lean" else None

    def argv(port: int) -> list[str]:
        config = orjson.loads(config_path.read_bytes())
        config["listen"] = {"host": "127.0.0.1", "port": port, "mcpPort": mcp_port}
        config_path.write_bytes(orjson.dumps(config))
        return ["gateway", "--config", str(config_path), "--log-json"]

    process, port = run_corral("gateway", argv, log_dir)
    try:
        token, _ = await api_key()
        base = f"http://127.0.0.1:{mcp_port or port}"
        url = f"{base}/mcp/{NAMESPACE}/{SERVER}"
        async with mcp_session(url, headers={"Authorization": f"Bearer {token}"}) as session:
            echoed = await session.call_tool("echo", {"message": "from the CLI"})
            assert echoed.content[0].text == "Echo: from the CLI"  # type: ignore[union-attr]
        if mcp_port is not None:
            async with aiohttp.ClientSession() as http:
                for path in ("/healthz", "/api/audit", "/v0/servers"):
                    async with http.get(base + path) as other:
                        assert other.status == 404, path
    finally:
        process.stop()
    lines = [orjson.loads(line) for line in (log_dir / "gateway.log").read_text().splitlines()]
    routed = [line for line in lines if line.get("route") == f"{NAMESPACE}/{SERVER}"]
    assert routed
    assert all(len(line["request_id"]) == 32 and line["user"] == "alice" for line in routed)
    assert token not in (log_dir / "gateway.log").read_text()
    tuned = [line for line in lines if line["message"].startswith("garbage collector: ")]
    assert len(tuned) == 1
    assert "start-up objects frozen" in tuned[0]["message"]


def test_jwks_and_key_tools(tmp_path: Path) -> None:
    upstream = FakeShim("http://127.0.0.1:1/mcp", generate_signing_key())
    config_path = write_config(tmp_path, upstream, "postgresql://unused")
    runner = CliRunner()
    printed = runner.invoke(gateway, ["jwks", "--config", str(config_path)])
    assert printed.exit_code == 0, printed.output
    assert orjson.loads(printed.output) == {"keys": [public_jwk(upstream.key)]}
    assert '"d"' not in printed.output

    made = runner.invoke(gateway, ["new-signing-key", str(tmp_path / "new.pem")])
    assert made.exit_code == 0, made.output
    new_key = load_signing_key((tmp_path / "new.pem").read_bytes())
    assert orjson.loads(made.output) == public_jwk(new_key)
    assert (tmp_path / "new.pem").stat().st_mode & 0o077 == 0
    again = runner.invoke(gateway, ["new-signing-key", str(tmp_path / "new.pem")])
    assert again.exit_code != 0

    session_key = runner.invoke(gateway, ["new-session-key"])
    assert len(base64.b64decode(session_key.output.strip())) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sessions": {"keys": [{"value": "c2hvcnQ="}]}}, "sessions.keys[0] must be 32"),
        ({"servers": [{"namespace": "a", "name": "b"}]}, "url"),
        ({"surprise": 1}, "surprise"),
        ({"identity": {"signingKeys": [{"value": "not a pem"}]}}, "identity.signingKeys[0]"),
        ({"identity": {"signingKeys": [{"file": "/nonexistent.pem"}]}}, "cannot read secret"),
        ({"shimTokens": [{"token": {"value": "t"}, "server": "team-a"}]}, "shimTokens.0.server"),
        ({"shimTokens": [{"token": {"value": "t"}, "server": "*/git"}]}, "shimTokens.0.server"),
        ({"listen": {"port": 8000, "mcpPort": 8000}}, "listen.mcpPort must differ"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "gateway.yaml"
    config = {
        "publicBaseUrl": "https://corral.test",
        "database": {"dsn": {"value": "postgresql://unused"}},
        "identity": {"signingKeys": [{"value": signing_key_pem(generate_signing_key()).decode()}]},
        "sessions": {"keys": [{"value": base64.b64encode(os.urandom(32)).decode()}]},
        **change,
    }
    path.write_bytes(orjson.dumps(config))
    with pytest.raises(ConfigError, match=re.escape(message)):
        to_settings(load_config(path))


def test_secrets_stay_out_of_reprs(tmp_path: Path) -> None:
    upstream = FakeShim("http://127.0.0.1:1/mcp", generate_signing_key())
    dsn = "postgresql://corral:hunter2-password@127.0.0.1/corral"
    config = load_config(write_config(tmp_path, upstream, dsn))
    settings = to_settings(config)
    session_key = config.sessions.keys[0].read()
    for text in (repr(config), repr(settings), str(settings)):
        assert "hunter2" not in text
        assert session_key not in text
        assert "PRIVATE KEY" not in text


def test_shim_tokens_are_scoped_to_a_server_or_a_namespace(tmp_path: Path) -> None:
    upstream = FakeShim("http://127.0.0.1:1/mcp", generate_signing_key())
    tokens = [
        {"token": {"value": "one-server"}, "server": "team-a/git"},
        {"token": {"value": "whole-namespace"}, "server": "team-b/*"},
    ]
    path = write_config(tmp_path, upstream, "postgresql://unused", shimTokens=tokens)
    settings = to_settings(load_config(path))
    assert dict(settings.shim_tokens) == {"one-server": "team-a/git", "whole-namespace": "team-b/*"}
