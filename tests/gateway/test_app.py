"""The gateway app over real HTTP and real Postgres: audit ingest, query, export, keys, 401s."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from corral.gateway.app import _listen_for_revocations, create_app
from corral.gateway.appkeys import API_KEY_AUTHENTICATOR
from corral.gateway.authn import ApiKeyAuthenticator, Principal
from corral.gateway.settings import GatewaySettings
from corral.shim.audit import AuditEvent
from corral.store import api_keys
from corral.store.pools import PoolSettings, connect
from tests.fixtures.store import RestartablePostgres

BASE = "https://corral.example"
SHIM_TOKEN = "shim-token-for-tools-time"
NAMESPACE_TOKEN = "shim-token-for-every-server-in-tools"
USERS = {
    "admin-token": Principal(user="root", groups=("corral-admins",)),
    "auditor-token": Principal(user="carol", groups=("corral-auditors",)),
    "ada-token": Principal(user="ada", groups=("eng",)),
}


def settings_for(dsn: str) -> GatewaySettings:
    return GatewaySettings(
        database=PoolSettings(dsn, min_size=1, max_size=4),
        public_base_url=BASE,
        shim_tokens={SHIM_TOKEN: "tools/time", NAMESPACE_TOKEN: "tools/*"},
        static_users=USERS,
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_events(count: int, **overrides: Any) -> list[dict[str, Any]]:
    """Events exactly as the shim puts them on the wire (`AuditEvent.to_dict`)."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    events = []
    for n in range(count):
        event = AuditEvent(
            namespace="tools",
            server="time",
            method="tools/call",
            request_id=f"req-{n}",
            rpc_id=n,
            session_id="session-1",
            user=("ada", "bob")[n % 2],
            groups=["eng"],
            client_name="claude-ai",
            client_version="1.2",
            target_kind="tool",
            target="get_current_time",
            arguments={"timezone": "UTC", "n": n},
            result={"content": [{"type": "text", "text": "noon"}]},
            decision={"allowed": True, "policy": "tools/everyone", "rule": "time"},
            filters=[{"filter": "dlp", "phase": "request", "outcome": "allow", "latencyMs": 0.4}],
            time=(start + timedelta(milliseconds=n)).isoformat(timespec="milliseconds"),
        )
        event.finish("ok", 200)
        events.append({**event.to_dict(), **overrides})
    return events


@pytest.fixture
async def client(postgres_dsn: str) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings_for(postgres_dsn)))) as client:
        yield client


async def ingest(client: TestClient[Any, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(
        "/api/audit/ingest", data=orjson.dumps({"events": events}), headers=auth(SHIM_TOKEN)
    )
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize(
    ("path", "headers", "presented"),
    [
        ("/api/audit", {}, False),
        ("/api/audit?access_token=admin-token", {}, False),
        ("/api/apikeys", {"Authorization": "Basic YWRtaW46YWRtaW4="}, False),
        ("/api/audit", auth("crl_000000000000_" + "a" * 52), True),
    ],
)
async def test_unauthenticated_api_calls_get_401_naming_resource_metadata(
    client: TestClient[Any, Any], path: str, headers: dict[str, str], presented: bool
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    metadata_url = f"{BASE}/.well-known/oauth-protected-resource/api"
    assert challenge.startswith(f'Bearer resource_metadata="{metadata_url}"')
    assert ('error="invalid_token"' in challenge) is presented
    metadata = await (await client.get("/.well-known/oauth-protected-resource/api")).json()
    assert metadata["resource"] == f"{BASE}/api"


async def test_a_namespace_token_posts_for_every_server_of_its_namespace_only(
    client: TestClient[Any, Any],
) -> None:
    mixed = make_events(2) + make_events(1, server="git")
    accepted = await client.post(
        "/api/audit/ingest", data=orjson.dumps({"events": mixed}), headers=auth(NAMESPACE_TOKEN)
    )
    assert accepted.status == 200, await accepted.text()
    assert (await accepted.json())["stored"] == 3
    for outside in (make_events(1, namespace="billing"), make_events(1, server="")):
        body = orjson.dumps({"events": make_events(1) + outside})
        refused = await client.post("/api/audit/ingest", data=body, headers=auth(NAMESPACE_TOKEN))
        assert refused.status == 403
        assert "events[1]" in (await refused.json())["message"]
    as_auditor = auth("auditor-token")
    page = await (await client.get("/api/audit", headers=as_auditor)).json()
    assert sorted(e["server"] for e in page["events"]) == ["git", "time", "time"]


async def test_ingest_needs_the_shim_token_and_its_own_server(
    client: TestClient[Any, Any],
) -> None:
    body = orjson.dumps({"events": make_events(1)})
    assert (await client.post("/api/audit/ingest", data=body)).status == 401
    wrong = await client.post("/api/audit/ingest", data=body, headers=auth("ada-token"))
    assert wrong.status == 401
    other = orjson.dumps({"events": make_events(1, server="git")})
    refused = await client.post("/api/audit/ingest", data=other, headers=auth(SHIM_TOKEN))
    assert refused.status == 403
    bad = orjson.dumps({"events": make_events(1, decision="perhaps")})
    invalid = await client.post("/api/audit/ingest", data=bad, headers=auth(SHIM_TOKEN))
    assert invalid.status == 400
    assert "decision" in (await invalid.json())["message"]
    page = await (await client.get("/api/audit", headers=auth("auditor-token"))).json()
    assert page["events"] == []
    metrics = await (await client.get("/metrics")).text()
    assert 'corral_gateway_audit_batches_total{outcome="unauthenticated"} 2.0' in metrics
    assert 'corral_gateway_audit_batches_total{outcome="forbidden"} 1.0' in metrics
    assert 'corral_gateway_audit_batches_total{outcome="invalid"} 1.0' in metrics


async def test_a_retried_batch_is_stored_once(client: TestClient[Any, Any]) -> None:
    events = make_events(20)
    assert (await ingest(client, events))["stored"] == 20
    assert await ingest(client, events) == {"stored": 0, "duplicates": 20, "out_of_window": 0}
    metrics = await (await client.get("/metrics")).text()
    assert 'corral_gateway_audit_events_total{result="stored"} 20.0' in metrics
    assert 'corral_gateway_audit_events_total{result="duplicate"} 20.0' in metrics


async def test_query_pages_and_views_per_role(client: TestClient[Any, Any]) -> None:
    events = make_events(15)
    await ingest(client, events)

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"order": "asc", "limit": "4", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/audit", params=query, headers=auth("auditor-token"))
        page = await response.json()
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in seen] == [e["id"] for e in events]
    assert seen[0]["arguments"] == events[0]["arguments"]

    admin = await (await client.get("/api/audit", headers=auth("admin-token"))).json()
    assert len(admin["events"]) == 15
    assert all("arguments" not in e and "result" not in e for e in admin["events"])

    own = await (await client.get("/api/audit", headers=auth("ada-token"))).json()
    assert {e["user"] for e in own["events"]} == {"ada"}
    assert len(own["events"]) == 8
    assert all("arguments" not in e for e in own["events"])
    others = await client.get("/api/audit", params={"user": "bob"}, headers=auth("ada-token"))
    assert others.status == 403

    tool = await client.get(
        "/api/audit",
        params={"tool": "nope", "since": "2000-01-01T00:00:00Z"},
        headers=auth("admin-token"),
    )
    assert (await tool.json())["events"] == []
    bad = await client.get("/api/audit", params={"since": "yesterday"}, headers=auth("admin-token"))
    assert bad.status == 400


async def test_export_streams_jsonl_and_csv(client: TestClient[Any, Any]) -> None:
    events = make_events(7)
    await ingest(client, events)
    params = {"order": "asc"}
    jsonl = await client.get(
        "/api/audit/export", params={**params, "format": "jsonl"}, headers=auth("auditor-token")
    )
    assert jsonl.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in (await jsonl.read()).splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in events]
    assert lines[2]["arguments"] == events[2]["arguments"]

    plain = await client.get(
        "/api/audit/export", params={**params, "format": "csv"}, headers=auth("admin-token")
    )
    rows = list(csv.DictReader(io.StringIO(await plain.text())))
    assert [r["id"] for r in rows] == [e["id"] for e in events]
    assert "arguments" not in rows[0]
    unknown = await client.get(
        "/api/audit/export", params={"format": "xml"}, headers=auth("admin-token")
    )
    assert unknown.status == 400


async def test_api_key_admin_lifecycle(client: TestClient[Any, Any]) -> None:
    body = {"user": "dave", "groups": ["eng"], "servers": ["tools/time"], "expires_in_days": 7}
    forbidden = await client.post("/api/apikeys", json=body, headers=auth("ada-token"))
    assert forbidden.status == 403
    created = await client.post("/api/apikeys", json=body, headers=auth("admin-token"))
    assert created.status == 201
    record = await created.json()
    key = record["key"]
    assert record["servers"] == ["tools/time"]

    as_dave = await client.get("/api/audit", headers=auth(key))
    assert as_dave.status == 200

    listed = await (await client.get("/api/apikeys", headers=auth("admin-token"))).json()
    assert [k["prefix"] for k in listed["keys"]] == [record["prefix"]]
    assert key not in orjson.dumps(listed).decode()

    revoked = await client.delete(f"/api/apikeys/{record['prefix']}", headers=auth("admin-token"))
    assert revoked.status == 204
    assert (await client.get("/api/audit", headers=auth(key))).status == 401
    again = await client.delete(f"/api/apikeys/{record['prefix']}", headers=auth("admin-token"))
    assert again.status == 404
    invalid = await client.post(
        "/api/apikeys", json={"user": "", "groups": "eng"}, headers=auth("admin-token")
    )
    assert invalid.status == 400


async def test_ingest_answers_503_while_postgres_is_down_and_recovers(
    restartable_postgres: RestartablePostgres,
) -> None:
    app = create_app(settings_for(restartable_postgres.dsn))
    async with TestClient(TestServer(app)) as client:
        events = make_events(5)
        await ingest(client, events[:2])
        restartable_postgres.stop()
        down = await client.post(
            "/api/audit/ingest", data=orjson.dumps({"events": events}), headers=auth(SHIM_TOKEN)
        )
        assert down.status == 503
        assert down.headers["Retry-After"] == "1"
        assert (await client.get("/readyz")).status == 503
        restartable_postgres.start()
        assert await ingest(client, events) == {"stored": 3, "duplicates": 2, "out_of_window": 0}
        assert (await client.get("/readyz")).status == 200


POLL_INTERVAL = 0.05


async def until_status(client: TestClient[Any, Any], token: str, status: int) -> None:
    """Ask GET /api/audit as ``token`` until it answers ``status``; bound it with a timeout."""
    for _attempt in itertools.count():
        if (await client.get("/api/audit", headers=auth(token))).status == status:
            return
        await asyncio.sleep(POLL_INTERVAL)


async def test_revocation_listener_outlives_a_client_error_on_its_connection(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Postgres that restarts can leave a new connection half-broken; asyncpg then raises its
    own client error (not a connection error) on LISTEN. The listener logs it and reconnects
    instead of ending for the rest of the gateway's life. The error is raised by hand: a real
    one depends on the timing of a restart."""

    class FailsOnce(ApiKeyAuthenticator):
        attempts = 0

        async def listen(self, connection: asyncpg.Connection) -> None:
            self.attempts += 1
            if self.attempts == 1:
                raise asyncpg.InternalClientError("cannot switch to state 11")
            await super().listen(connection)

    settings = settings_for(postgres_dsn)
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1)
    authenticator = FailsOnce(pool)
    task = asyncio.create_task(_listen_for_revocations(settings, authenticator))
    try:
        async with asyncio.timeout(30):
            await authenticator.listening.wait()
        assert authenticator.attempts == 2
        assert "revocation listener failed, reconnecting" in caplog.text
        assert "cannot switch to state 11" in caplog.text
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
    assert not authenticator.listening.is_set()


async def test_revocation_reaches_a_replica_after_postgres_restarts(
    restartable_postgres: RestartablePostgres,
) -> None:
    settings = replace(settings_for(restartable_postgres.dsn), api_key_cache_ttl=3600.0)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        async with asyncio.timeout(30):
            await app[API_KEY_AUTHENTICATOR].listening.wait()
        created = await client.post(
            "/api/apikeys", json={"user": "dave"}, headers=auth("admin-token")
        )
        record = await created.json()
        assert (await client.get("/api/audit", headers=auth(record["key"]))).status == 200
        await asyncio.to_thread(restartable_postgres.stop)
        await asyncio.to_thread(restartable_postgres.start)
        other_replica = await connect(PoolSettings(restartable_postgres.dsn))
        try:
            assert await api_keys.revoke_key(other_replica, record["prefix"])
        finally:
            await other_replica.close()
        async with asyncio.timeout(30):
            await until_status(client, record["key"], 401)
