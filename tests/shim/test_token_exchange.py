"""RFC 8693 token exchange: the server gets a token for the caller, never the caller's own."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from corral.common.assertion import ASSERTION_HEADER, AssertionVerifier, public_jwk
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.shim import ISSUER, NAMESPACE, SERVER, RecordingUpstream, ShimHandle

ShimFactory = Callable[..., ShimHandle]


@dataclass
class TokenEndpoint:
    """An authorization server's token endpoint that trusts the gateway's assertions."""

    url: str = ""
    verifier: AssertionVerifier | None = None
    forms: list[dict[str, str]] = field(default_factory=list)
    issued: int = 0
    fail: bool = False


@pytest.fixture
async def token_endpoint() -> AsyncIterator[TokenEndpoint]:
    endpoint = TokenEndpoint()

    async def handle(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"shim-client:shim-secret").decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        form = dict(await request.post())
        endpoint.forms.append({k: str(v) for k, v in form.items()})
        if endpoint.fail:
            return web.json_response({"error": "access_denied"}, status=400)
        assert endpoint.verifier is not None
        subject = endpoint.verifier.verify(str(form["subject_token"])).subject
        endpoint.issued += 1
        token = f"downstream-{subject}-{endpoint.issued}"
        return web.json_response({"access_token": token, "expires_in": 300})

    app = web.Application()
    app.router.add_post("/token", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint.url = f"http://{LOOPBACK}:{port}/token"
    yield endpoint
    await runner.cleanup()


def exchange_config(endpoint: TokenEndpoint) -> dict[str, Any]:
    return {
        "tokenEndpoint": endpoint.url,
        "clientId": {"value": "shim-client"},
        "clientSecret": {"value": "shim-secret"},
        "audience": "https://api.example.com",
        "scopes": ["repo", "read:user"],
    }


async def call(http: aiohttp.ClientSession, shim: ShimHandle, user: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    headers = {
        ASSERTION_HEADER: shim.assertion(user),
        "Authorization": "Bearer the-clients-own-token",
        "Accept": "application/json",
    }
    async with http.post(shim.url, json=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_each_user_gets_an_exchanged_token_cached_until_expiry(
    shim_factory: ShimFactory,
    recording_upstream: RecordingUpstream,
    token_endpoint: TokenEndpoint,
) -> None:
    shim = shim_factory(recording_upstream.url, tokenExchange=exchange_config(token_endpoint))
    token_endpoint.verifier = AssertionVerifier(
        [public_jwk(shim.key)], issuer=ISSUER, audience=f"corral:{NAMESPACE}/{SERVER}"
    )
    async with aiohttp.ClientSession() as http:
        statuses = [await call(http, shim, user) for user in ("alice", "alice", "bob")]
    assert statuses == [200, 200, 200]
    seen = [r.headers.get("Authorization") for r in recording_upstream.requests]
    assert seen == [
        "Bearer downstream-alice-1",
        "Bearer downstream-alice-1",
        "Bearer downstream-bob-2",
    ]
    assert token_endpoint.issued == 2
    form = token_endpoint.forms[0]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert (form["audience"], form["scope"]) == ("https://api.example.com", "repo read:user")


async def test_a_refused_exchange_never_reaches_the_server(
    shim_factory: ShimFactory,
    recording_upstream: RecordingUpstream,
    token_endpoint: TokenEndpoint,
) -> None:
    token_endpoint.fail = True
    shim = shim_factory(recording_upstream.url, tokenExchange=exchange_config(token_endpoint))
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo"}}
    headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(shim.url, json=body, headers=headers) as response,
    ):
        reply = orjson.loads(await response.read())
    assert response.status == 502
    assert "access_denied" in reply["error"]["message"]
    assert recording_upstream.requests == []
