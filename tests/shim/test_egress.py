"""Egress policy: user-configured URLs may not reach private, loopback or metadata addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from corral.common.assertion import ASSERTION_HEADER, UsedIds
from corral.common.egress import RefusedAddressError, address_allowed, check_url
from corral.shim.config import parse_config
from corral.shim.metrics import ShimMetrics
from corral.shim.runtime import build_runtime
from tests.fixtures.shim import RecordingUpstream, ShimHandle

ShimFactory = Callable[..., ShimHandle]
BASE = (
    "server: {namespace: a, name: b}\n"
    "identity: {issuer: i, jwks: [{kty: EC, crv: P-256, x: AA, y: AA}]}\n"
)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_address_policy(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), []) is allowed


def test_allowed_networks_open_private_ranges() -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), networks)
    assert address_allowed(ipaddress.ip_address("::ffff:10.1.2.3"), networks)
    check_url("http://10.0.0.9/filter", networks)
    with pytest.raises(RefusedAddressError):
        check_url("http://169.254.169.254/latest/meta-data", networks)
    with pytest.raises(RefusedAddressError):
        check_url("file:///etc/passwd", networks)


def test_configs_with_refused_literal_addresses_are_refused() -> None:
    metadata_filter = BASE + (
        "upstream: {url: 'http://127.0.0.1:3000/mcp'}\n"
        "filters: [{name: f, url: 'http://169.254.169.254/', secret: {value: s}}]\n"
    )
    with pytest.raises(ValueError, match=r"169\.254\.169\.254"):
        build_runtime(parse_config(metadata_filter), ShimMetrics(), UsedIds())
    remote_loopback = BASE + "upstream: {url: 'http://[::ffff:127.0.0.1]:3000/mcp'}\n"
    with pytest.raises(ValueError, match="private/loopback"):
        build_runtime(parse_config(remote_loopback), ShimMetrics(), UsedIds())


async def test_a_filter_name_resolving_to_loopback_is_refused(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    port = recording_upstream.url.split(":")[2].split("/")[0]
    shim = shim_factory(
        recording_upstream.url,
        egress={},
        filters=[
            {
                "name": "sneaky",
                "url": f"http://localhost:{port}/mcp",
                "secret": {"value": "s"},
            }
        ],
    )
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo"},
    }
    headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(shim.url, json=body, headers=headers) as response,
    ):
        reply = orjson.loads(await response.read())
    assert reply["error"]["code"] == -32005
    assert "refused addresses" in reply["error"]["message"]
    assert recording_upstream.requests == []
