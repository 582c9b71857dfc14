"""Upstream headers from mounted Secrets: read when the configuration is loaded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from corral.common.assertion import UsedIds, generate_signing_key, public_jwk
from corral.shim.config import dump_config, parse_config
from corral.shim.metrics import ShimMetrics
from corral.shim.runtime import build_runtime

BASE = {
    "server": {"namespace": "team", "name": "remote"},
    "upstream": {"url": "https://mcp.example.com/mcp", "headers": {"X-Plain": "p"}},
    "identity": {"issuer": "https://gw.test", "jwks": [public_jwk(generate_signing_key())]},
}


def config_with(secret_headers: dict[str, object]) -> bytes:
    upstream = {**BASE["upstream"], "secretHeaders": secret_headers}
    return orjson.dumps({**BASE, "upstream": upstream})


def test_secret_headers_are_read_from_files_into_the_upstream_headers(tmp_path: Path) -> None:
    key = tmp_path / "api-key"
    key.write_text("s3cret\n")
    config = parse_config(config_with({"X-Api-Key": {"file": str(key)}}))
    assert "s3cret" not in repr(config)

    runtime = build_runtime(config, ShimMetrics(), UsedIds())
    assert runtime.config.upstream.headers == {"X-Plain": "p", "X-Api-Key": "s3cret"}

    key.write_text("rotated")
    assert (
        build_runtime(config, ShimMetrics(), UsedIds()).config.upstream.headers["X-Api-Key"]
        == "rotated"
    )


def test_a_missing_header_secret_refuses_the_configuration(tmp_path: Path) -> None:
    config = parse_config(config_with({"X-Api-Key": {"file": str(tmp_path / "absent")}}))
    with pytest.raises(ValueError, match="cannot read upstream header 'X-Api-Key'"):
        build_runtime(config, ShimMetrics(), UsedIds())


def test_inline_secret_headers_survive_a_dump() -> None:
    config = parse_config(config_with({"X-Api-Key": {"value": "inline"}}))
    assert parse_config(dump_config(config)).upstream.secret_headers["X-Api-Key"].read() == "inline"
