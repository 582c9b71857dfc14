"""Attacks on the MCP front door, against a recording stand-in for the shim that proves what
reaches it (and what never does): credentials, origins, limits, paths, bodies, slow clients."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from corral.api.policies import AccessPolicy
from corral.common.assertion import (
    ASSERTION_HEADER,
    SECRET_HEADER,
    AssertionVerifier,
    InvalidAssertionError,
    generate_signing_key,
)
from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry
from corral.gateway.instances import InstanceStarting
from corral.gateway.routing import ROUTER
from tests.fixtures.gateway import (
    PUBLIC_BASE_URL,
    ApiKeyMaker,
    FakeShim,
    Gateway,
    GatewayFactory,
    on_both_fronts,
)
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.shim import ISSUER, NAMESPACE, SERVER, RecordingUpstream

pytest_generate_tests = on_both_fronts

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def recorded_gateway(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory
) -> Gateway:
    return await gateway_factory(FakeShim(recording_upstream.url, generate_signing_key()))


async def post(
    url: str,
    token: str | None,
    message: Any = INITIALIZE,
    **headers: str,
) -> tuple[int, CIMultiDict[str], bytes]:
    sent = {**MCP_HEADERS, **(bearer(token) if token else {}), **headers}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=orjson.dumps(message), headers=sent) as reply,
    ):
        return reply.status, CIMultiDict(reply.headers), await reply.read()


async def shim_verifier(gateway: Gateway) -> AssertionVerifier:
    """A verifier as the shim behind the gateway has one, from the gateway's published JWKS."""
    jwks_url = f"{gateway.base_url}/.well-known/corral/jwks.json"
    async with aiohttp.ClientSession() as http, http.get(jwks_url) as reply:
        jwks = (await reply.json())["keys"]
    return AssertionVerifier(jwks, issuer=ISSUER, audience=f"corral:{NAMESPACE}/{SERVER}")


async def test_the_shim_gets_a_fresh_assertion_and_never_the_client_credentials(
    recording_upstream: RecordingUpstream, recorded_gateway: Gateway, api_key: ApiKeyMaker
) -> None:
    token, prefix = await api_key("alice")
    status, headers, _ = await post(
        recorded_gateway.mcp_url(),
        token,
        Cookie="session=secret-cookie",
        **{"X-Request-Id": "req-123", "X-Forwarded-User": "root"},
    )
    assert status == 200
    assert headers["X-Request-Id"] == "req-123"
    session_id = headers["Mcp-Session-Id"]
    assert session_id.startswith("v1.")
    assert "recorded-session" not in session_id
    verifier = await shim_verifier(recorded_gateway)
    received = CIMultiDict(recording_upstream.requests[-1].headers)
    lowered = {name.lower() for name in received}
    assert {"authorization", "cookie", "x-forwarded-user"}.isdisjoint(lowered)
    assert token not in str(received)
    assert received["X-Request-Id"] == "req-123"
    identity = verifier.verify(received[ASSERTION_HEADER], received[SECRET_HEADER])
    assert (identity.subject, identity.groups) == ("alice", ("dev",))
    assert identity.client_id == f"apikey:{prefix}"
    assert identity.expires_at - identity.claims["iat"] <= 60

    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    status, headers, _ = await post(
        recorded_gateway.mcp_url(), token, ping, **{"Mcp-Session-Id": session_id}
    )
    assert status == 200
    assert headers["Mcp-Session-Id"] == session_id
    forwarded = [CIMultiDict(r.headers) for r in recording_upstream.requests]
    assert forwarded[-1]["Mcp-Session-Id"] == "recorded-session"
    assert len(forwarded[-1]["X-Request-Id"]) == 32
    uses = {(r[ASSERTION_HEADER], r[SECRET_HEADER]) for r in forwarded}
    assert len(uses) == 2
    with pytest.raises(InvalidAssertionError, match="replayed"):
        verifier.verify(received[ASSERTION_HEADER], received[SECRET_HEADER])


async def test_concurrent_calls_never_share_a_use_of_an_assertion(
    recording_upstream: RecordingUpstream, recorded_gateway: Gateway, api_key: ApiKeyMaker
) -> None:
    token, _ = await api_key("alice")
    status, headers, _ = await post(recorded_gateway.mcp_url(), token)
    assert status == 200
    session = {"Mcp-Session-Id": headers["Mcp-Session-Id"]}
    for round_ in range(3):
        pings = [{"jsonrpc": "2.0", "id": 10 * round_ + n, "method": "ping"} for n in range(8)]
        replies = await asyncio.gather(
            *(post(recorded_gateway.mcp_url(), token, ping, **session) for ping in pings)
        )
        assert [reply[0] for reply in replies] == [200] * 8
    sent = [CIMultiDict(r.headers) for r in recording_upstream.requests]
    assert len(sent) == 25
    check = await shim_verifier(recorded_gateway)
    for headers_sent in sent:  # each one accepted: no use was handed out twice
        assert check.verify(headers_sent[ASSERTION_HEADER], headers_sent[SECRET_HEADER])
    assert len({h[ASSERTION_HEADER] for h in sent}) < 25  # one signature served several
    assert recorded_gateway.app[ROUTER].signer.signed < 25


async def test_each_use_secret_travels_only_with_its_own_request(
    recording_upstream: RecordingUpstream, recorded_gateway: Gateway, api_key: ApiKeyMaker
) -> None:
    token, _ = await api_key("alice")
    status, headers, _ = await post(
        recorded_gateway.mcp_url(),
        token,
        **{ASSERTION_HEADER: "forged", SECRET_HEADER: "0.chosen-by-the-client"},
    )
    assert status == 200
    session = {"Mcp-Session-Id": headers["Mcp-Session-Id"]}
    for n in range(4):
        ping = {"jsonrpc": "2.0", "id": 2 + n, "method": "ping"}
        assert (await post(recorded_gateway.mcp_url(), token, ping, **session))[0] == 200
    check = await shim_verifier(recorded_gateway)
    sent = [CIMultiDict(r.headers) for r in recording_upstream.requests]
    assert sent[0].getall(ASSERTION_HEADER) != ["forged"]
    assert sent[0].getall(SECRET_HEADER) != ["0.chosen-by-the-client"]
    assert len({h[ASSERTION_HEADER] for h in sent}) == 1
    for n, headers_sent in enumerate(sent):
        secret = headers_sent[SECRET_HEADER].partition(".")[2]
        others = sent[:n] + sent[n + 1 :]
        assert all(secret not in str(other) for other in others)
        with pytest.raises(InvalidAssertionError, match="secret"):
            check.verify(headers_sent[ASSERTION_HEADER])
        identity = check.verify(headers_sent[ASSERTION_HEADER], headers_sent[SECRET_HEADER])
        assert identity.subject == "alice"


async def test_a_missing_or_bad_token_gets_401_naming_the_resource_metadata(
    recording_upstream: RecordingUpstream, recorded_gateway: Gateway
) -> None:
    for token, presented in ((None, False), ("crl_000000000000_" + "a" * 52, True)):
        status, headers, body = await post(recorded_gateway.mcp_url(), token)
        assert status == 401
        metadata_url = f"{PUBLIC_BASE_URL}/.well-known/oauth-protected-resource/mcp/team/everything"
        challenge = headers["WWW-Authenticate"]
        assert challenge.startswith(f'Bearer resource_metadata="{metadata_url}"')
        assert ('error="invalid_token"' in challenge) is presented
        assert orjson.loads(body)["error"]["code"] == -32001
    async with aiohttp.ClientSession() as http:
        well_known = f"{recorded_gateway.base_url}/.well-known/oauth-protected-resource"
        async with http.get(f"{well_known}/mcp/team/everything") as reply:
            assert await reply.json() == {
                "resource": f"{PUBLIC_BASE_URL}/mcp/team/everything",
                "bearer_methods_supported": ["header"],
                "resource_name": "MCP server team/everything",
            }
        async with http.get(f"{well_known}/mcp/team/missing") as reply:
            assert reply.status == 404
    assert recording_upstream.requests == []


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (None, 200),
        ("https://corral.test", 200),
        ("https://console.example", 200),
        ("https://evil.example", 403),
        ("http://corral.test", 403),
        ("null", 403),
    ],
)
async def test_browser_origins_other_than_ours_are_refused(
    recording_upstream: RecordingUpstream,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
    origin: str | None,
    expected: int,
) -> None:
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, generate_signing_key()),
        allowed_origins=frozenset({"https://console.example"}),
    )
    token, _ = await api_key()
    status, _, _ = await post(gateway.mcp_url(), token, **({"Origin": origin} if origin else {}))
    assert status == expected
    assert len(recording_upstream.requests) == (1 if expected == 200 else 0)


async def test_a_key_limited_to_one_server_does_not_open_another(
    recording_upstream: RecordingUpstream, recorded_gateway: Gateway, api_key: ApiKeyMaker
) -> None:
    token, _ = await api_key(servers=[f"{NAMESPACE}/{SERVER}"])
    status, _, body = await post(recorded_gateway.mcp_url(server="other"), token)
    assert status == 403
    assert "limited to other servers" in orjson.loads(body)["error"]["message"]
    assert recording_upstream.requests == []
    assert (await post(recorded_gateway.mcp_url(), token))[0] == 200


async def test_callers_no_policy_could_allow_get_403_before_reaching_the_shim(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    ops_only = AccessPolicy.model_validate(
        {
            "metadata": {"name": "ops", "namespace": NAMESPACE},
            "spec": {
                "subjects": [{"group": "ops"}],
                "targets": {"servers": [SERVER]},
                "rules": [{"name": "all", "effect": "Allow", "methods": ["*"]}],
            },
        }
    )
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, generate_signing_key()), policies=[ops_only]
    )
    developer, _ = await api_key("dana", groups=("dev",))
    operator, _ = await api_key("otto", groups=("ops",))
    status, _, body = await post(gateway.mcp_url(), developer)
    assert (status, orjson.loads(body)["error"]["code"]) == (403, -32003)
    assert recording_upstream.requests == []
    assert (await post(gateway.mcp_url(), operator))[0] == 200


async def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes exactly as given (no client-side path normalisation); the whole answer."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def request_head(path: str, token: str, length: int, **extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {LOOPBACK}",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {length}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    "path",
    [
        "/mcp/team/other/../everything",
        "/mcp/team/./everything",
        "/mcp/team/everything/../other",
        "/mcp/team/other%2F..%2Feverything",
        "/mcp/team%2Fother/everything",
        "/mcp/team/%2e%2e/team/everything",
        "/mcp//team/everything",
        "/mcp/team/everything/",
        "/mcp/team/Everything",
        "/mcp/team/ev%65rything",
    ],
)
async def test_path_tricks_are_never_routed(
    recording_upstream: RecordingUpstream,
    recorded_gateway: Gateway,
    api_key: ApiKeyMaker,
    path: str,
) -> None:
    token, _ = await api_key()
    body = orjson.dumps(INITIALIZE)
    answer = await raw_request(
        recorded_gateway.mcp_port, request_head(path, token, len(body)), body
    )
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert recording_upstream.requests == []
    plain = request_head("/mcp/team/everything", token, len(body))
    assert b" 200 " in (await raw_request(recorded_gateway.mcp_port, plain, body)).split(b"\r\n")[0]


async def test_oversized_bodies_get_413_whether_announced_or_not(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, generate_signing_key()), max_body_bytes=1024
    )
    token, _ = await api_key()
    big = {**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * 2000}}  # type: ignore[dict-item]
    assert (await post(gateway.mcp_url(), token, big))[0] == 413

    async def chunks() -> Any:
        data = orjson.dumps(big)
        for start in range(0, len(data), 256):
            yield data[start : start + 256]

    async with aiohttp.ClientSession() as http:
        headers = {**MCP_HEADERS, **bearer(token)}
        async with http.post(gateway.mcp_url(), data=chunks(), headers=headers) as reply:
            assert reply.status == 413
    assert recording_upstream.requests == []


async def test_other_methods_get_405_naming_the_allowed_ones(
    recorded_gateway: Gateway, recording_upstream: RecordingUpstream, api_key: ApiKeyMaker
) -> None:
    token, _ = await api_key()
    async with aiohttp.ClientSession() as http:
        for method in ("PUT", "PATCH", "OPTIONS"):
            async with http.request(
                method, recorded_gateway.mcp_url(), headers=bearer(token)
            ) as answer:
                assert answer.status == 405, method
                assert "POST" in answer.headers["Allow"]
    assert recording_upstream.requests == []


async def test_a_client_that_stalls_mid_body_is_cut_off(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, generate_signing_key()), body_timeout=0.3
    )
    token, _ = await api_key()
    head = request_head("/mcp/team/everything", token, 500)
    answer = await raw_request(gateway.mcp_port, head, b'{"jsonrpc": "2.0",')
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert recording_upstream.requests == []


async def test_a_caller_over_the_rate_limit_gets_429_with_retry_after(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, generate_signing_key()),
        rate_per_second=0.01,
        rate_burst=2,
    )
    alice, _ = await api_key("alice")
    bob, _ = await api_key("bob")
    statuses = [(await post(gateway.mcp_url(), alice))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, _ = await post(gateway.mcp_url(), alice)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert (await post(gateway.mcp_url(), bob))[0] == 200


class NeverReady:
    """An instance manager whose instances never become ready (a cold start that hangs)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def running(self, server: ServerEntry, principal: Principal) -> str | None:
        return None

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str:
        self.asked.append(principal.user)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Starting:
    """An instance manager reporting that the instance is still starting."""

    def running(self, server: ServerEntry, principal: Principal) -> str | None:
        return None

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str:
        raise InstanceStarting(server, retry_after=7)


async def test_an_instance_that_does_not_start_in_time_gets_503_with_retry_after(
    recording_upstream: RecordingUpstream, gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    key = generate_signing_key()
    slow = [ServerEntry(NAMESPACE, SERVER, recording_upstream.url, startup_timeout=0.2)]
    never = NeverReady()
    gateway = await gateway_factory(
        FakeShim(recording_upstream.url, key), instances=never, servers=slow
    )
    token, _ = await api_key("alice")
    status, headers, _ = await post(gateway.mcp_url(), token)
    assert (status, never.asked) == (503, ["alice"])
    assert int(headers["Retry-After"]) >= 1
    starting = await gateway_factory(FakeShim(recording_upstream.url, key), instances=Starting())
    status, headers, _ = await post(starting.mcp_url(), token)
    assert (status, headers["Retry-After"]) == (503, "7")
    assert recording_upstream.requests == []


async def test_unknown_servers_methods_and_unreachable_shims(
    gateway_factory: GatewayFactory, api_key: ApiKeyMaker
) -> None:
    from tests.fixtures.processes import free_port

    gateway = await gateway_factory(
        FakeShim(f"http://{LOOPBACK}:{free_port()}/mcp", generate_signing_key())
    )
    token, _ = await api_key()
    assert (await post(gateway.mcp_url(server="missing"), token))[0] == 404
    status, _, body = await post(gateway.mcp_url(), token)
    assert (status, orjson.loads(body)["error"]["code"]) == (502, -32004)
    async with (
        aiohttp.ClientSession() as http,
        http.put(gateway.mcp_url(), headers=bearer(token)) as reply,
    ):
        assert reply.status == 405
