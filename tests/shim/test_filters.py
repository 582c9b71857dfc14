"""Webhook filters: signed calls, verdicts, mutation rules, and verdicts in the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from corral.common.assertion import ASSERTION_HEADER
from corral.shim.filters import SIGNATURE_HEADER, sign, verify_signature
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.shim import RecordingUpstream, ShimHandle

ShimFactory = Callable[..., ShimHandle]
SECRET = "filter-secret"


@dataclass
class FilterServer:
    """A filter endpoint answering with `answer(envelope)`, checking every signature."""

    url: str = ""
    answer: Callable[[dict[str, Any]], dict[str, Any]] = lambda envelope: {"allow": True}
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0


@pytest.fixture
async def filter_server() -> AsyncIterator[FilterServer]:
    server = FilterServer()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
            server.bad_signatures += 1
            return web.Response(status=401)
        envelope = orjson.loads(body)
        server.envelopes.append(envelope)
        return web.json_response(server.answer(envelope))

    app = web.Application()
    app.router.add_post("/filter", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://{LOOPBACK}:{port}/filter"
    yield server
    await runner.cleanup()


def filter_config(server: FilterServer, **options: Any) -> dict[str, Any]:
    return {"name": "guard", "url": server.url, "secret": {"value": SECRET}, **options}


async def call(shim: ShimHandle, name: str = "echo", text: str = "hello") -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"message": text}},
    }
    headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(shim.url, json=body, headers=headers) as response,
    ):
        reply: dict[str, Any] = orjson.loads(await response.read())
        return reply


def test_signatures_reject_tampering_and_replays() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_000_000)
    assert verify_signature(SECRET, header, body, now=1_000_010)
    assert not verify_signature(SECRET, header, b'{"a":2}', now=1_000_010)
    assert not verify_signature("other", header, body, now=1_000_010)
    assert not verify_signature(SECRET, header, body, now=1_000_000 + 3600)


async def test_a_denying_filter_stops_the_call_with_its_reason(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, filter_server: FilterServer
) -> None:
    filter_server.answer = lambda envelope: {"allow": False, "reason": "no secrets please"}
    shim = shim_factory(recording_upstream.url, filters=[filter_config(filter_server)])
    reply = await call(shim)
    assert reply["error"]["code"] == -32005
    assert "no secrets please" in reply["error"]["message"]
    assert recording_upstream.calls("tools/call") == []
    (envelope,) = filter_server.envelopes
    assert envelope["phase"] == "request"
    assert envelope["tool"] == "echo"
    assert envelope["user"]["sub"] == "alice"
    assert envelope["message"]["params"]["arguments"] == {"message": "hello"}
    assert filter_server.bad_signatures == 0


async def test_mutation_needs_mutate_and_may_not_change_the_target(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, filter_server: FilterServer
) -> None:
    def rewrite(envelope: dict[str, Any]) -> dict[str, Any]:
        message = envelope["message"]
        name = "get-env" if message["params"]["arguments"]["message"] == "retarget" else "echo"
        params = {"name": name, "arguments": {"message": "[scrubbed]"}}
        return {"allow": True, "message": {**message, "params": params}}

    filter_server.answer = rewrite
    allowed = shim_factory(
        recording_upstream.url, filters=[filter_config(filter_server, mutate=True)]
    )
    assert "result" in await call(allowed)
    (forwarded,) = recording_upstream.calls("tools/call")
    assert forwarded["params"]["arguments"] == {"message": "[scrubbed]"}
    refused = await call(allowed, text="retarget")
    assert "may not change" in refused["error"]["message"]
    not_allowed = shim_factory(recording_upstream.url, filters=[filter_config(filter_server)])
    assert "mutate" in (await call(not_allowed))["error"]["message"]
    assert len(recording_upstream.calls("tools/call")) == 1


async def test_response_filters_and_selection_by_tool(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, filter_server: FilterServer
) -> None:
    filter_server.answer = lambda envelope: {"allow": envelope["phase"] == "request"}
    shim = shim_factory(
        recording_upstream.url,
        filters=[filter_config(filter_server, phase="both", tools=["get-*"])],
    )
    assert "result" in await call(shim, "echo")
    assert filter_server.envelopes == []
    withheld = await call(shim, "get-env")
    assert withheld["error"]["code"] == -32005
    assert [e["phase"] for e in filter_server.envelopes] == ["request", "response"]
    assert len(recording_upstream.calls("tools/call")) == 2


async def test_ignore_policy_lets_calls_through_when_the_filter_is_down(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream
) -> None:
    down = {
        "name": "down",
        "url": f"http://{LOOPBACK}:9/filter",
        "secret": {"value": SECRET},
        "failurePolicy": "Ignore",
    }
    shim = shim_factory(recording_upstream.url, filters=[down])
    assert "result" in await call(shim)
