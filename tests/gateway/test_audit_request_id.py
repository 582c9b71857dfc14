"""One request id from the client to Postgres: the gateway forwards ``X-Request-Id`` to a real
shim, the shim puts it in its audit event and posts it to the gateway's real ingest route with a
namespace-scoped shim token, and the stored row carries it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from corral.gateway import audit_api
from tests.fixtures.gateway import ApiKeyMaker, GatewayFactory, on_both_fronts
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.shim import NAMESPACE, RecordingUpstream, ShimHandle

pytest_generate_tests = on_both_fronts

ShimFactory = Callable[..., ShimHandle]
SHIM_TOKEN = "namespace-audit-token"
STORED_WITHIN = 30.0
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
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


async def _stored(pool: asyncpg.Pool, request_id: str) -> list[asyncpg.Record]:
    """The audit rows carrying ``request_id``, once there are any (bounded by a timeout)."""
    async with asyncio.timeout(STORED_WITHIN):
        while True:
            async with pool.acquire() as connection:
                rows = await connection.fetch(
                    "SELECT method, rpc_id, namespace, user_subject FROM audit_events "
                    "WHERE request_id = $1::jsonb",
                    orjson.dumps(request_id).decode(),
                )
            if rows:
                return rows
            await asyncio.sleep(0.1)


async def test_the_stored_audit_event_carries_the_clients_request_id(
    shim_factory: ShimFactory,
    recording_upstream: RecordingUpstream,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
    store_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    port = free_port()
    token_file = tmp_path / "audit-token"
    token_file.write_text(SHIM_TOKEN)
    sink: dict[str, Any] = {
        "kind": "http",
        "url": f"http://{LOOPBACK}:{port}{audit_api.INGEST_PATH}",
        "token": {"file": str(token_file)},
        "flushIntervalSeconds": 0.1,
    }
    shim = shim_factory(recording_upstream.url, audit={"payloads": "none", "sink": sink})
    gateway = await gateway_factory(
        shim, port=port, gateway={"shim_tokens": {SHIM_TOKEN: f"{NAMESPACE}/*"}}
    )
    token, _ = await api_key()
    chosen = f"client-{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as http:
        headers = {**HEADERS, "Authorization": f"Bearer {token}", "X-Request-Id": chosen}
        async with http.post(gateway.mcp_url(), json=INITIALIZE, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            assert reply.headers["X-Request-Id"] == chosen
            await reply.read()
        headers["X-Request-Id"] = "not valid at the gateway"
        async with http.post(gateway.mcp_url(), json=INITIALIZE, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            replaced = reply.headers["X-Request-Id"]
            await reply.read()
    assert replaced != "not valid at the gateway"
    for request_id in (chosen, replaced):
        (row,) = await _stored(store_pool, request_id)
        assert row["method"] == "initialize"
        assert orjson.loads(row["rpc_id"]) == 1
        assert (row["namespace"], row["user_subject"]) == (NAMESPACE, "alice")
