"""Audit events: what they carry, and the spool that keeps them through an ingest outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from corral.common.assertion import ASSERTION_HEADER
from corral.shim.audit import utc_timestamp
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.shim import RecordingUpstream, ShimHandle

ShimFactory = Callable[..., ShimHandle]


class Ingest:
    """The gateway's ingest endpoint, stoppable and restartable on the same port."""

    def __init__(
        self, port: int, refuse: Callable[[list[dict[str, Any]]], int | None] = lambda e: None
    ) -> None:
        self.port = port
        self.refuse = refuse
        self.url = f"http://{LOOPBACK}:{port}/ingest"
        self.events: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.changed = asyncio.Event()

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Events for tools/call (readiness probes add unauthenticated events too)."""
        return [event for event in self.events if event.get("method") == "tools/call"]
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.tokens.add(request.headers.get("Authorization", ""))
        events = orjson.loads(await request.read())["events"]
        refused = self.refuse(events)
        if refused is not None:
            return web.json_response({"error": "refused"}, status=refused)
        self.events.extend(events)
        self.changed.set()
        return web.json_response({"accepted": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/ingest", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(60):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def call(
    http: aiohttp.ClientSession,
    shim: ShimHandle,
    request_id: int,
    extra_headers: dict[str, str] | None = None,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "m", "password": "hunter2"}},
    }
    headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
    headers.update(extra_headers or {})
    async with http.post(shim.url, json=body, headers=headers) as response:
        assert response.status == 200


async def poll_metric(http: aiohttp.ClientSession, shim: ShimHandle, name: str) -> float:
    """Poll the admin /metrics until the counter is above zero (deadline 30 s)."""
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"{shim.admin_url}/metrics") as response:
                for line in (await response.text()).splitlines():
                    if line.startswith(name + " ") and float(line.split()[1]) > 0:
                        return float(line.split()[1])
            await asyncio.sleep(0.1)


def audit_config(ingest: Ingest, spool: Path, payloads: str = "full") -> dict[str, Any]:
    return {
        "payloads": payloads,
        "redact": ["$.arguments.password"],
        "sink": {
            "kind": "http",
            "url": ingest.url,
            "token": {"value": "ingest-token"},
            "batchSize": 5,
            "flushIntervalSeconds": 0.1,
            "spoolDir": str(spool),
        },
    }


async def test_events_carry_who_what_and_redacted_payloads(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port())
    await ingest.start()
    shim = shim_factory(recording_upstream.url, audit=audit_config(ingest, tmp_path))
    async with aiohttp.ClientSession() as http:
        await call(http, shim, 7, {"X-Request-Id": "gw-req-7"})
    await ingest.wait_for(lambda: len(ingest.calls) >= 1)
    await ingest.stop()
    (event,) = ingest.calls
    assert ingest.tokens == {"Bearer ingest-token"}
    assert event["user"] == "alice"
    assert event["groups"] == ["dev"]
    assert event["clientId"] == "tests"
    assert (event["namespace"], event["server"]) == ("team", "everything")
    assert (event["method"], event["tool"], event["rpcId"]) == ("tools/call", "echo", 7)
    assert event["requestId"] == "gw-req-7"
    assert event["arguments"] == {"message": "m", "password": "[REDACTED]"}
    assert event["result"]["content"][0]["text"] == "ok"
    assert event["decision"]["allowed"] is True
    assert event["decision"]["policy"] == "team/everyone"
    assert event["status"] == "ok"
    assert event["latencyMs"] >= 0


async def test_calls_answered_just_before_the_shim_stops_are_all_audited(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Events are shipped after the answer; stopping the shim (SIGTERM) right after the last
    answer still delivers every event, once, with no flush interval having passed."""
    ingest = Ingest(free_port())
    await ingest.start()
    audit = audit_config(ingest, tmp_path, "none")
    audit["sink"].update(batchSize=1000, flushIntervalSeconds=300)
    shim = shim_factory(recording_upstream.url, audit=audit)
    async with aiohttp.ClientSession() as http:
        for rpc_id in range(1, 6):
            await call(http, shim, rpc_id)
    await asyncio.to_thread(shim.process.stop)
    assert shim.process.popen.returncode == 0
    await ingest.wait_for(lambda: len(ingest.calls) >= 5)
    await ingest.stop()
    assert sorted(event["rpcId"] for event in ingest.calls) == [1, 2, 3, 4, 5]


async def test_a_malformed_or_missing_request_id_is_replaced_by_a_fresh_one(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port())
    await ingest.start()
    shim = shim_factory(recording_upstream.url, audit=audit_config(ingest, tmp_path, "none"))
    presented = {1: "has space", 2: "x" * 129, 3: None, 4: "ok:" + "a-1." * 31 + "z", 5: "<a>"}
    async with aiohttp.ClientSession() as http:
        for rpc_id, request_id in presented.items():
            headers = {} if request_id is None else {"X-Request-Id": request_id}
            await call(http, shim, rpc_id, headers)
    await ingest.wait_for(lambda: len(ingest.calls) >= 5)
    await ingest.stop()
    recorded = {event["rpcId"]: event["requestId"] for event in ingest.calls}
    assert recorded[4] == presented[4], "128 characters of [A-Za-z0-9._:-] are kept"
    for rpc_id in (1, 2, 3, 5):
        assert recorded[rpc_id] != presented[rpc_id]
        assert len(recorded[rpc_id]) == 32
        assert recorded[rpc_id].isalnum()
    assert len({recorded[1], recorded[2], recorded[3], recorded[5]}) == 4


async def test_an_ingest_outage_loses_no_event_and_duplicates_none(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port())
    await ingest.start()
    shim = shim_factory(recording_upstream.url, audit=audit_config(ingest, tmp_path, "metadata"))
    async with aiohttp.ClientSession() as http:
        for request_id in range(1, 11):
            await call(http, shim, request_id)
        await ingest.wait_for(lambda: len(ingest.calls) >= 10)
        await ingest.stop()
        for request_id in range(11, 41):
            await call(http, shim, request_id)
        spooled = await poll_metric(http, shim, "corral_shim_audit_events_spooled_total")
        await ingest.start()
        for request_id in range(41, 51):
            await call(http, shim, request_id)
    await ingest.wait_for(lambda: len(ingest.calls) >= 50)
    await ingest.stop()
    ids = [event["id"] for event in ingest.events]
    assert len(ids) == len(set(ids))
    assert sorted(event["rpcId"] for event in ingest.calls) == list(range(1, 51))
    assert spooled > 0
    assert ingest.calls[-1]["arguments"]["keys"] == ["message", "password"]
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240


def refuse_big_batches_and_request_13(events: list[dict[str, Any]]) -> int | None:
    if len(events) > 2:
        return 413
    if any(event.get("rpcId") == 13 for event in events):
        return 400
    return None


async def test_refused_batches_are_split_and_only_bad_events_dropped(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port(), refuse_big_batches_and_request_13)
    await ingest.start()
    shim = shim_factory(recording_upstream.url, audit=audit_config(ingest, tmp_path, "none"))
    async with aiohttp.ClientSession() as http:
        for request_id in range(1, 21):
            await call(http, shim, request_id)
        await ingest.wait_for(lambda: len(ingest.calls) >= 19)
        dropped = await poll_metric(http, shim, "corral_shim_audit_events_dropped_total")
    await ingest.stop()
    assert sorted(event["rpcId"] for event in ingest.calls) == [n for n in range(1, 21) if n != 13]
    assert dropped == 1


async def test_client_name_and_version_come_from_initialize(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port())
    await ingest.start()
    shim = shim_factory(recording_upstream.url, audit=audit_config(ingest, tmp_path, "none"))
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "inspector", "version": "0.9"},
        },
    }
    cancel = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 3, "reason": "user"},
    }
    async with aiohttp.ClientSession() as http:
        headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json"}
        async with http.post(shim.url, json=initialize, headers=headers) as response:
            session = {"Mcp-Session-Id": response.headers["Mcp-Session-Id"]}
        headers = {ASSERTION_HEADER: shim.assertion(), "Accept": "application/json", **session}
        async with http.post(shim.url, json=cancel, headers=headers) as response:
            assert response.status == 202
    await ingest.wait_for(
        lambda: any(e.get("method") == "notifications/cancelled" for e in ingest.events)
    )
    await ingest.stop()
    (cancelled,) = [e for e in ingest.events if e.get("method") == "notifications/cancelled"]
    assert (cancelled["clientName"], cancelled["clientVersion"]) == ("inspector", "0.9")
    assert cancelled["sessionId"] == "recorded-session"
    assert recording_upstream.calls("notifications/cancelled")[0]["params"]["requestId"] == 3


async def test_filter_verdicts_go_into_the_event(
    shim_factory: ShimFactory, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    ingest = Ingest(free_port())
    await ingest.start()
    down = {
        "name": "dlp",
        "url": f"http://{LOOPBACK}:9/check",
        "secret": {"value": "s"},
        "failurePolicy": "Ignore",
    }
    shim = shim_factory(
        recording_upstream.url, audit=audit_config(ingest, tmp_path, "none"), filters=[down]
    )
    async with aiohttp.ClientSession() as http:
        await call(http, shim, 5)
    await ingest.wait_for(lambda: len(ingest.calls) >= 1)
    await ingest.stop()
    (event,) = ingest.calls
    (verdict,) = event["filters"]
    assert (verdict["filter"], verdict["phase"], verdict["outcome"]) == ("dlp", "request", "error")
    assert event["status"] == "ok"
    assert "arguments" not in event


@pytest.mark.parametrize("now", [0.0, 1.0005, 1_795_000_000.999_9, 1_795_000_001.1234, 1e9 + 0.5])
def test_event_times_read_as_isoformat_writes_them(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    assert utc_timestamp(now) == expected
