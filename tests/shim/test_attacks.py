"""Attacks on the shim, each proving the upstream never saw what it must not see."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from corral.common.assertion import (
    ASSERTION_HEADER,
    SECRET_HEADER,
    generate_signing_key,
    mint_assertion,
)
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.shim import (
    ISSUER,
    NAMESPACE,
    SERVER,
    RecordingUpstream,
    ShimHandle,
)

ShimFactory = Callable[..., ShimHandle]
ACCEPT = "application/json, text/event-stream"
CALL_ECHO = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}


async def post(
    shim: ShimHandle,
    body: bytes | dict[str, Any],
    assertion: str | None = "mint",
    **headers: str,
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Accept": ACCEPT, "Content-Type": "application/json", **headers}
    if assertion == "mint":
        assertion = shim.assertion()
    if assertion is not None:
        sent[ASSERTION_HEADER] = assertion
    async with (
        aiohttp.ClientSession() as http,
        http.post(shim.url, data=data, headers=sent) as response,
    ):
        return response.status, orjson.loads(await response.read())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_no_token_passthrough(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    status, reply = await post(
        shim, CALL_ECHO, Authorization="Bearer client-secret", Cookie="session=secret"
    )
    assert status == 200
    assert "result" in reply
    (recorded,) = recording_upstream.requests
    names = {name.lower() for name in recorded.headers}
    assert not names & {"authorization", "cookie", ASSERTION_HEADER.lower()}
    assert b"client-secret" not in recorded.body


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda shim: None, id="missing"),
        pytest.param(
            lambda shim: mint_assertion(
                generate_signing_key(),
                issuer=ISSUER,
                audience=f"corral:{NAMESPACE}/{SERVER}",
                subject="mallory",
            ),
            id="forged",
        ),
        pytest.param(lambda shim: shim.assertion(now=1_000_000), id="expired"),
        pytest.param(lambda shim: shim.assertion(audience="corral:team/other"), id="audience"),
        pytest.param(
            lambda shim: (
                b64(b'{"alg":"none"}')
                + "."
                + b64(orjson.dumps({"iss": ISSUER, "aud": f"corral:{NAMESPACE}/{SERVER}"}))
                + "."
            ),
            id="alg-none",
        ),
    ],
)
async def test_bad_assertions_get_401_and_never_reach_the_server(
    shim_factory: ShimFactory,
    recording_upstream: RecordingUpstream,
    make: Callable[[ShimHandle], str | None],
) -> None:
    shim = shim_factory(recording_upstream.url)
    status, reply = await post(shim, CALL_ECHO, assertion=make(shim))
    assert status == 401
    assert reply["error"]["code"] == -32001
    assert recording_upstream.requests == []


async def test_replayed_assertion_is_refused(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    token = shim.assertion()
    assert (await post(shim, CALL_ECHO, assertion=token))[0] == 200
    assert (await post(shim, CALL_ECHO, assertion=token))[0] == 401
    assert len(recording_upstream.requests) == 1


async def test_an_assertion_used_before_a_reload_is_refused_after_it(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    token = shim.assertion()
    assert (await post(shim, CALL_ECHO, assertion=token))[0] == 200
    shim.rewrite(policies=[DENY_GET_ENV])
    call_get_env = {**CALL_ECHO, "params": {"name": "get-env"}}
    async with asyncio.timeout(30):  # until the reload denies get-env
        while True:
            if (await post(shim, call_get_env))[1].get("error", {}).get("code") == -32003:
                break
            await asyncio.sleep(0.05)
    assert (await post(shim, CALL_ECHO, assertion=token))[0] == 401
    echoes = [c for c in recording_upstream.calls("tools/call") if c["params"]["name"] == "echo"]
    assert len(echoes) == 1


async def test_an_assertion_for_a_run_of_requests_is_useless_without_each_use_secret(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    token = shim.assertion(secrets=["first-secret", "second-secret"])
    first = await post(shim, CALL_ECHO, assertion=token, **{SECRET_HEADER: "0.first-secret"})
    assert first[0] == 200
    stolen_uses = [
        {},  # the token alone, as seen on the wire
        {SECRET_HEADER: "0.first-secret"},  # a use already made, replayed
        {SECRET_HEADER: "1.first-secret"},  # a seen secret moved to an unused index
        {SECRET_HEADER: "1.a-guess"},
    ]
    for stolen in stolen_uses:
        status, reply = await post(shim, CALL_ECHO, assertion=token, **stolen)
        assert status == 401
        assert "secret" in reply["error"]["message"] or "replayed" in reply["error"]["message"]
    second = await post(shim, CALL_ECHO, assertion=token, **{SECRET_HEADER: "1.second-secret"})
    assert second[0] == 200
    assert len(recording_upstream.calls("tools/call")) == 2
    for recorded in recording_upstream.requests:
        assert not any(name.lower().startswith("corral-") for name in recorded.headers)
        assert "secret" not in str(recorded.headers)


async def test_a_tampered_copy_of_an_assertion_in_use_is_refused(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    token = shim.assertion(secrets=["first-secret", "second-secret"])
    assert (await post(shim, CALL_ECHO, assertion=token, **{SECRET_HEADER: "0.first-secret"}))[
        0
    ] == 200
    header, claims, signature = token.split(".")
    widened = orjson.loads(base64.urlsafe_b64decode(claims + "=="))
    widened["groups"] = ["admin"]
    forged = f"{header}.{b64(orjson.dumps(widened))}.{signature}"
    status, reply = await post(
        shim, CALL_ECHO, assertion=forged, **{SECRET_HEADER: "1.second-secret"}
    )
    assert status == 401
    assert "does not verify" in reply["error"]["message"]
    assert len(recording_upstream.calls("tools/call")) == 1


DENY_GET_ENV = {
    "metadata": {"name": "no-env", "namespace": NAMESPACE},
    "spec": {
        "subjects": [{"group": "dev"}],
        "targets": {"servers": [SERVER]},
        "rules": [
            {"name": "use", "effect": "Allow", "methods": ["*"]},
            {"name": "deny-env", "effect": "Deny", "tools": ["get-env"]},
        ],
    },
}


@pytest.mark.parametrize(
    "name", ["get-env", "GET-ENV", "Get-Env", "\uff47et-env", "get\u200b-env", "get-env\u00ad"]
)
async def test_denied_tool_never_reaches_the_server_in_any_spelling(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, name: str
) -> None:
    shim = shim_factory(recording_upstream.url, policies=[DENY_GET_ENV])
    call = {**CALL_ECHO, "params": {"name": name}}
    status, reply = await post(shim, call)
    assert reply["error"]["code"] in (-32003, -32602)
    assert status == 200
    assert recording_upstream.calls("tools/call") == []


async def test_list_results_hide_denied_tools(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url, policies=[DENY_GET_ENV])
    _, reply = await post(shim, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert [tool["name"] for tool in reply["result"]["tools"]] == ["echo"]


async def test_server_tool_subset_is_enforced(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url, tools={"deny": ["get-*"]})
    _, reply = await post(shim, {**CALL_ECHO, "params": {"name": "Get-Env"}})
    assert reply["error"]["code"] == -32003
    assert recording_upstream.calls("tools/call") == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
            b'"params":{"name":"echo","name":"get-env"}}',
            400,
            -32600,
            id="duplicate-keys",
        ),
        pytest.param(orjson.dumps([CALL_ECHO, CALL_ECHO]), 400, -32600, id="batch"),
        pytest.param(b'{"jsonrpc":"2.0","id":1,', 400, -32700, id="invalid-json"),
        pytest.param(b'"tools/call"', 400, -32600, id="not-an-object"),
        pytest.param(
            orjson.dumps({**CALL_ECHO, "params": {"name": "echo", "pad": "x" * 5000}}),
            413,
            -32600,
            id="too-large",
        ),
    ],
)
async def test_malformed_messages_never_reach_the_server(
    shim_factory: ShimFactory,
    recording_upstream: RecordingUpstream,
    body: bytes,
    status: int,
    code: int,
) -> None:
    shim = shim_factory(recording_upstream.url, limits={"maxMessageBytes": 4096})
    got_status, reply = await post(shim, body)
    assert (got_status, reply["error"]["code"]) == (status, code)
    assert recording_upstream.requests == []


async def test_stateless_era_header_mismatch_is_400(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "get-env",
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    version = {"MCP-Protocol-Version": "2026-07-28"}
    status, reply = await post(
        shim, call, **version, **{"Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    )
    assert (status, reply["error"]["code"]) == (400, -32020)
    status, reply = await post(
        shim, call, **version, **{"Mcp-Method": "tools/list", "Mcp-Name": "get-env"}
    )
    assert (status, reply["error"]["code"]) == (400, -32020)
    assert recording_upstream.requests == []
    status, _ = await post(
        shim, call, **version, **{"Mcp-Method": "tools/call", "Mcp-Name": "get-env"}
    )
    assert status == 200
    assert len(recording_upstream.requests) == 1


async def test_session_ids_are_bound_to_their_user(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    shim = shim_factory(recording_upstream.url)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}},
    }
    assert (await post(shim, initialize))[0] == 200
    session = {"Mcp-Session-Id": "recorded-session"}
    assert (await post(shim, CALL_ECHO, assertion=shim.assertion("alice"), **session))[0] == 200
    status, _ = await post(shim, CALL_ECHO, assertion=shim.assertion("bob"), **session)
    assert status == 404
    assert len(recording_upstream.calls("tools/call")) == 1


@pytest.fixture
async def stalled_filter() -> AsyncIterator[str]:
    """A filter endpoint that never answers (until the test ends)."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"allow": True})

    app = web.Application()
    app.router.add_post("/filter", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://{LOOPBACK}:{port}/filter"
    release.set()
    await runner.cleanup()


async def test_filter_timeout_fails_closed(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, stalled_filter: str
) -> None:
    shim = shim_factory(
        recording_upstream.url,
        filters=[
            {
                "name": "slow",
                "url": stalled_filter,
                "secret": {"value": "s3cret"},
                "timeoutSeconds": 0.3,
            }
        ],
    )
    status, reply = await post(shim, CALL_ECHO)
    assert status == 200
    assert reply["error"]["code"] == -32005
    assert "timed out" in reply["error"]["message"]
    assert recording_upstream.calls("tools/call") == []
