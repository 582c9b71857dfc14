"""The MCP conformance server suite through gateway and shim: every check that passes against
server-everything directly (the shim tests' committed baseline) passes through both.

The suite sends no credentials, so a small front adds an API key's bearer header and nothing
else; everything behind it is the real gateway, shim and server. The gateway allows the
front's origin as it would allow a console's, and refuses the suite's rebinding origin (which
server-everything alone accepts)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fixtures.gateway import HOP_BY_HOP, ApiKeyMaker, GatewayFactory, on_both_fronts
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.shim import ShimHandle
from tests.shim.test_conformance import EXPECTED, run_suite

pytest_generate_tests = on_both_fronts

ShimFactory = Callable[..., ShimHandle]

pytestmark = pytest.mark.node


@contextlib.asynccontextmanager
async def with_bearer(url: str, token: str, port: int) -> AsyncIterator[str]:
    """A front on ``port`` that adds ``Authorization: Bearer token`` to every request."""

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Authorization"] = f"Bearer {token}"
        body = await request.read()
        async with http.request(request.method, url, headers=headers, data=body or None) as up:
            response = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/mcp", forward)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, port)
        await site.start()
        try:
            yield f"http://{LOOPBACK}:{runner.addresses[0][1]}/mcp"
        finally:
            await runner.cleanup()


async def test_gateway_and_shim_pass_what_the_server_passes(
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
    tmp_path: Path,
) -> None:
    port = free_port()
    console = f"http://{LOOPBACK}:{port}"
    gateway = await gateway_factory(
        shim_factory(everything_http), allowed_origins=frozenset({console})
    )
    token, _ = await api_key()
    expected = set(json.loads(EXPECTED.read_text())["passing"])
    async with with_bearer(gateway.mcp_url(), token, port) as url:
        through = await run_suite(url, tmp_path / "gateway")
    assert expected - through == set()
    assert "dns-rebinding-protection/localhost-host-rebinding-rejected" in through
