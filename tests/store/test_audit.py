"""Audit store: idempotent batched ingest, filtered keyset queries, export, retention, bodies."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from corral.store import audit, audit_query
from corral.store.audit import AuditSettings, AuditWriter
from corral.store.audit_query import AuditQuery
from corral.store.errors import InvalidInputError

TODAY = date(2026, 11, 23)
START = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)


def make_event(n: int, **overrides: Any) -> dict[str, Any]:
    """An event in the shim's wire format (docs/shim.md)."""
    event: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "time": audit_query.format_time(START + timedelta(seconds=n * 7, microseconds=n)),
        "namespace": "tools",
        "server": ("time", "git")[n % 3 == 0],
        "direction": "client",
        "method": "tools/call" if n % 4 else "tools/list",
        "requestId": f"req-{n}",
        "rpcId": n if n % 2 else f"rpc-{n}",
        "sessionId": "s-1",
        "user": ("ada", "bob")[n % 2],
        "email": f"{('ada', 'bob')[n % 2]}@example.com",
        "groups": ["eng"] if n % 2 == 0 else [],
        "clientId": "apikey:0123456789ab",
        "clientName": "claude",
        "clientVersion": "1.2.3",
        "tool": f"tool-{n % 5}",
        "arguments": {"n": n, "text": "héllo"},
        "result": {"content": [{"type": "text", "text": str(n)}]},
        "decision": {"allowed": n % 6 != 0, "policy": "tools/default", "rule": "r0"},
        "filters": [{"filter": "pii", "phase": "request", "outcome": "allow", "latencyMs": 1.0}],
        "status": "error" if n % 7 == 0 else "ok",
        "httpStatus": 200,
        "latencyMs": 1.5 + n,
    }
    event.update(overrides)
    return event


def stored_fields(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "receivedAt"}


@pytest.fixture
def writer(store_pool: asyncpg.Pool) -> AuditWriter:
    return AuditWriter(store_pool, AuditSettings(retention_days=7, days_ahead=2), today=TODAY)


async def read_all(pool: asyncpg.Pool, query: AuditQuery, *, auditor: bool = True) -> list[Any]:
    pages = []
    async with pool.acquire() as connection:
        while True:
            page = await audit_query.query_events(connection, query, auditor=auditor)
            pages.append(page.events)
            if page.next_cursor is None:
                return pages
            query = AuditQuery(**{**query.__dict__, "cursor": page.next_cursor})


async def test_ingested_events_come_back_exactly_in_order_across_pages(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    events = [make_event(n) for n in range(25)]
    result = await writer.ingest(events[::-1])
    assert (result.stored, result.duplicates, result.out_of_window) == (25, 0, 0)

    pages = await read_all(store_pool, AuditQuery(order="asc", limit=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [stored_fields(e) for p in pages for e in p] == events

    newest_first = await read_all(store_pool, AuditQuery(order="desc", limit=7))
    assert [stored_fields(e) for p in newest_first for e in p] == events[::-1]


async def test_events_with_the_same_time_page_stably_by_event_id(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    same = audit_query.format_time(START)
    events = [make_event(n, time=same) for n in range(9)]
    await writer.ingest(events)
    pages = await read_all(store_pool, AuditQuery(order="asc", limit=2))
    ids = [e["id"] for p in pages for e in p]
    assert ids == sorted((e["id"] for e in events), key=uuid.UUID)


async def test_a_retried_batch_is_not_duplicated(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    events = [make_event(n) for n in range(10)]
    await writer.ingest(events)
    again = await writer.ingest([*events, events[0], make_event(99)])
    assert (again.stored, again.duplicates) == (1, 11)
    async with store_pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM audit_events") == 11


async def test_a_bad_event_rejects_the_whole_batch(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    bad = make_event(1, decision="maybe")
    with pytest.raises(InvalidInputError, match=r"events\[1\]: field 'decision'"):
        await writer.ingest([make_event(0), bad])
    with pytest.raises(InvalidInputError, match="no UTC offset"):
        await writer.ingest([make_event(0, time="2026-11-23T00:00:00")])
    with pytest.raises(InvalidInputError, match="'id'"):
        await writer.ingest([make_event(0, id="nope")])
    with pytest.raises(InvalidInputError, match="'requestId'"):
        await writer.ingest([make_event(0, requestId=[1])])
    with pytest.raises(InvalidInputError, match="'rpcId'"):
        await writer.ingest([make_event(0, rpcId={"id": 1})])
    with pytest.raises(InvalidInputError, match="'user'"):
        await writer.ingest([make_event(0, user=7)])
    async with store_pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM audit_events") == 0


async def test_a_bad_event_late_in_a_large_batch_is_named_and_nothing_is_stored(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    """Large batches are validated in slices (yielding to other requests in between): an error
    in a later slice still names the event's index in the whole batch and stores nothing."""
    events = [make_event(n) for n in range(200)]
    events[120] = make_event(120, decision="maybe")
    with pytest.raises(InvalidInputError, match=r"events\[120\]: field 'decision'"):
        await writer.ingest(events)
    async with store_pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM audit_events") == 0


FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"user": "ada"}, lambda e: e["user"] == "ada"),
    ({"server": "git"}, lambda e: e["server"] == "git"),
    ({"method": "tools/list"}, lambda e: e["method"] == "tools/list"),
    ({"target": "tool-3"}, lambda e: e["tool"] == "tool-3"),
    ({"decision": "deny"}, lambda e: not e["decision"]["allowed"]),
    ({"decision": "allow"}, lambda e: e["decision"]["allowed"]),
    ({"status": "error"}, lambda e: e["status"] == "error"),
]


@pytest.mark.parametrize(("filters", "matches"), FILTERS)
async def test_filters_select_exactly_the_matching_events(
    store_pool: asyncpg.Pool,
    writer: AuditWriter,
    filters: dict[str, Any],
    matches: Callable[[dict[str, Any]], bool],
) -> None:
    events = [make_event(n) for n in range(30)]
    await writer.ingest(events)
    pages = await read_all(store_pool, AuditQuery(order="asc", limit=4, **filters))
    got = [stored_fields(e) for p in pages for e in p]
    assert got == [e for e in events if matches(e)]
    assert got


async def test_minimal_events_come_back_without_unset_fields(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    minimal = {"id": str(uuid.uuid4()), "time": "2026-11-23T01:02:03.456+00:00"}
    await writer.ingest([minimal])
    ((event,),) = await read_all(store_pool, AuditQuery())
    assert stored_fields(event) == {
        "id": uuid.UUID(minimal["id"]).hex,
        "time": "2026-11-23T01:02:03.456000Z",
        "namespace": "",
        "server": "",
        "groups": [],
        "status": "",
    }
    (none,) = await read_all(store_pool, AuditQuery(decision="allow"))
    assert none == []


async def test_time_range_is_half_open(store_pool: asyncpg.Pool, writer: AuditWriter) -> None:
    events = [make_event(n) for n in range(10)]
    await writer.ingest(events)
    since = datetime.fromisoformat(events[2]["time"])
    until = datetime.fromisoformat(events[6]["time"])
    (page,) = await read_all(store_pool, AuditQuery(since=since, until=until, order="asc"))
    assert [e["id"] for e in page] == [e["id"] for e in events[2:6]]


async def test_bodies_are_only_shown_to_auditors(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    await writer.ingest([make_event(1)])
    (plain,) = await read_all(store_pool, AuditQuery(), auditor=False)
    (full,) = await read_all(store_pool, AuditQuery(), auditor=True)
    assert "arguments" not in plain[0]
    assert "result" not in plain[0]
    assert full[0]["arguments"] == {"n": 1, "text": "héllo"}
    assert plain[0] == {k: v for k, v in full[0].items() if k not in ("arguments", "result")}


def test_visible_event_strips_bodies_without_touching_the_input() -> None:
    event = make_event(1)
    assert set(audit_query.visible_event(event, auditor=False)) == set(event) - {
        "arguments",
        "result",
    }
    assert audit_query.visible_event(event, auditor=True) == event
    assert "arguments" in event


async def test_export_as_jsonl_and_csv_matches_the_stored_events(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    events = [make_event(n) for n in range(12)]
    await writer.ingest(events)
    query = AuditQuery(order="asc")
    exported = [
        e async for e in audit_query.iterate_events(store_pool, query, auditor=True, page_size=5)
    ]
    assert [stored_fields(e) for e in exported] == events

    jsonl = b"".join(audit_query.jsonl_line(e) for e in exported)
    assert [orjson.loads(line) for line in jsonl.splitlines()] == exported

    text = audit_query.csv_header() + "".join(audit_query.csv_line(e) for e in exported)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["id"] for row in rows] == [e["id"] for e in events]
    assert orjson.loads(rows[3]["arguments"]) == events[3]["arguments"]
    assert orjson.loads(rows[3]["groups"]) == events[3]["groups"]
    assert orjson.loads(rows[3]["decision"]) == events[3]["decision"]
    assert (rows[3]["targetKind"], rows[3]["target"]) == ("tool", events[3]["tool"])
    assert rows[3]["latencyMs"] == str(events[3]["latencyMs"])


async def test_a_bad_cursor_or_limit_is_a_clear_error(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        with pytest.raises(InvalidInputError, match="cursor"):
            await audit_query.query_events(connection, AuditQuery(cursor="!!"), auditor=True)
        with pytest.raises(InvalidInputError, match="limit"):
            await audit_query.query_events(connection, AuditQuery(limit=0), auditor=True)


async def test_retention_drops_old_partitions_and_their_events(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    old = make_event(1, time="2026-11-17T12:00:00Z")
    recent = make_event(2, time="2026-11-23T12:00:00Z")
    await writer.ingest([old, recent])
    settings = AuditSettings(retention_days=7, days_ahead=2)
    async with store_pool.acquire() as connection:
        dropped = await audit.maintain_partitions(connection, settings, today=date(2026, 11, 24))
        partitions = await audit.existing_partitions(connection)
        ids = [r["event_id"] for r in await connection.fetch("SELECT event_id FROM audit_events")]
    assert dropped == ["audit_events_p20261117"]
    assert "audit_events_p20261126" in partitions
    assert "audit_events_p20261117" not in partitions
    assert [i.hex for i in ids] == [recent["id"]]


async def test_events_outside_the_window_are_counted_not_stored(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    too_old = make_event(1, time="2026-11-01T00:00:00Z")
    too_new = make_event(2, time="2026-12-25T00:00:00Z")
    result = await writer.ingest([too_old, too_new, make_event(3)])
    assert (result.stored, result.out_of_window) == (1, 2)
    async with store_pool.acquire() as connection:
        assert await audit.existing_partitions(connection) == [
            "audit_events_p20261122",
        ]


def test_partitions_to_drop_is_pure_and_ignores_foreign_tables() -> None:
    names = ["audit_events_p20261101", "audit_events_p20261120", "audit_events_default", "x"]
    settings = AuditSettings(retention_days=5)
    assert audit.partitions_to_drop(names, date(2026, 11, 24), settings) == [
        "audit_events_p20261101",
    ]


async def test_a_partition_dropped_elsewhere_is_recreated_on_ingest(
    store_pool: asyncpg.Pool, writer: AuditWriter
) -> None:
    await writer.ingest([make_event(1)])
    async with store_pool.acquire() as connection:
        await connection.execute("DROP TABLE audit_events_p20261122")
    result = await writer.ingest([make_event(2)])
    assert result.stored == 1
    async with store_pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM audit_events") == 1
