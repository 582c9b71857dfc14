"""Reading the audit log: filters, keyset pagination, streaming export, body visibility.

Events come back in the shim's wire format (docs/shim.md): ``id`` as 32 hex digits, ``time`` in
UTC with a ``Z``, fields never set left out, plus ``receivedAt``. The order is stable,
``(time, id)`` ascending or descending. A page's ``next_cursor`` is an opaque token encoding the
last row's key; the next page starts strictly after it, so pages neither repeat nor skip rows
even while new events arrive. Request and result bodies (``arguments``, ``result``) are shown
only to auditors: ``visible_event`` strips them for everyone else.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import orjson

from corral.store.auditrows import TARGET_KINDS
from corral.store.errors import InvalidInputError

Event = dict[str, Any]
Order = Literal["asc", "desc"]

BODY_FIELDS = ("arguments", "result")
EXPORT_FIELDS = (
    "time",
    "id",
    "namespace",
    "server",
    "direction",
    "method",
    "requestId",
    "rpcId",
    "sessionId",
    "user",
    "email",
    "groups",
    "clientId",
    "clientName",
    "clientVersion",
    "targetKind",
    "target",
    "decision",
    "filters",
    "status",
    "error",
    "httpStatus",
    "latencyMs",
    "arguments",
    "result",
    "receivedAt",
)
"""CSV columns: the wire fields, with the target split into its kind and name."""

_TEXT_COLUMNS = {
    "namespace": "namespace",
    "server": "server",
    "direction": "direction",
    "method": "method",
    "sessionId": "session_id",
    "user": "user_subject",
    "email": "email",
    "clientId": "client_id",
    "clientName": "client_name",
    "clientVersion": "client_version",
}
_JSON_COLUMNS = {
    "requestId": "request_id",
    "rpcId": "rpc_id",
    "arguments": "arguments",
    "result": "result",
    "decision": "decision",
    "filters": "filters",
    "error": "error",
}
_FILTER_COLUMNS = {
    "user": "user_subject",
    "namespace": "namespace",
    "server": "server",
    "method": "method",
    "target": "target",
    "status": "status",
}
MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditQuery:
    """Filters (exact match; None means any), a time range ``[since, until)``, and paging.

    ``target`` matches the tool, resource or prompt name; ``decision`` is ``allow`` or ``deny``
    (events without a decision match neither); ``status`` is the event's outcome.
    """

    user: str | None = None
    namespace: str | None = None
    server: str | None = None
    method: str | None = None
    target: str | None = None
    decision: Literal["allow", "deny"] | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    order: Order = "desc"
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class AuditPage:
    events: list[Event]
    next_cursor: str | None


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, microseconds kept."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(time: datetime, event_id: Any) -> str:
    raw = orjson.dumps([format_time(time), str(event_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time_text, event_id = orjson.loads(raw)
        return datetime.fromisoformat(time_text), uuid.UUID(event_id)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInputError(
            "cursor is not one this server issued; start again without it"
        ) from None


def visible_event(event: Mapping[str, Any], *, auditor: bool) -> Event:
    """The event as a caller may see it: without bodies unless the caller is an auditor."""
    if auditor:
        return dict(event)
    return {k: v for k, v in event.items() if k not in BODY_FIELDS}


def build_sql(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT for one page (``limit + 1`` rows, to know whether another page follows)."""
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}, got {query.limit}")
    if query.order not in ("asc", "desc"):
        raise InvalidInputError(f"order must be 'asc' or 'desc', got {query.order!r}")
    clauses: list[str] = []
    params: list[Any] = []

    def add(fragment: str, value: Any) -> None:
        params.append(value)
        clauses.append(fragment.replace("?", f"${len(params)}"))

    for field_name, column in _FILTER_COLUMNS.items():
        value = getattr(query, field_name)
        if value is not None:
            add(f"{column} = ?", value)
    if query.decision is not None:
        if query.decision not in ("allow", "deny"):
            raise InvalidInputError(f"decision must be 'allow' or 'deny', got {query.decision!r}")
        add("allowed = ?", query.decision == "allow")
    if query.since is not None:
        add("time >= ?", _aware(query.since, "since"))
    if query.until is not None:
        add("time < ?", _aware(query.until, "until"))
    if query.cursor is not None:
        after_time, after_id = decode_cursor(query.cursor)
        params.extend([after_time, after_id])
        op = ">" if query.order == "asc" else "<"
        clauses.append(f"(time, event_id) {op} (${len(params) - 1}, ${len(params)})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    direction = "ASC" if query.order == "asc" else "DESC"
    params.append(query.limit + 1)
    sql = (
        f"SELECT * FROM audit_events {where} "
        f"ORDER BY time {direction}, event_id {direction} LIMIT ${len(params)}"
    )
    return sql, params


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInputError(f"{name} has no time zone; give an RFC 3339 time with an offset")
    return value


def row_to_event(row: Mapping[str, Any]) -> Event:
    """A stored row in the wire format it was ingested in, plus ``receivedAt``."""
    event: Event = {
        "id": row["event_id"].hex,
        "time": format_time(row["time"]),
        "namespace": row["namespace"],
        "server": row["server"],
        "groups": list(row["groups"]),
        "status": row["status"],
    }
    for key, column in _TEXT_COLUMNS.items():
        if row[column] is not None:
            event[key] = row[column]
    for key, column in _JSON_COLUMNS.items():
        if row[column] is not None:
            event[key] = orjson.loads(row[column])
    if row["target_kind"] is not None:
        event[row["target_kind"]] = row["target"]
    if row["http_status"] is not None:
        event["httpStatus"] = row["http_status"]
    if row["latency_ms"] is not None:
        event["latencyMs"] = row["latency_ms"]
    event["receivedAt"] = format_time(row["received_at"])
    return event


def export_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event with its target under ``targetKind``/``target``, for fixed CSV columns."""
    row = dict(event)
    for kind in TARGET_KINDS:
        if kind in row and kind != "target":
            row["targetKind"], row["target"] = kind, row.pop(kind)
    return row


async def query_events(
    connection: asyncpg.Connection, query: AuditQuery, *, auditor: bool
) -> AuditPage:
    """One page of events matching ``query``, bodies per ``auditor``."""
    sql, params = build_sql(query)
    rows = await connection.fetch(sql, *params)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(rows[-1]["time"], rows[-1]["event_id"]) if more else None
    events = [visible_event(row_to_event(row), auditor=auditor) for row in rows]
    return AuditPage(events, cursor)


async def iterate_events(
    pool: asyncpg.Pool, query: AuditQuery, *, auditor: bool, page_size: int = MAX_PAGE
) -> AsyncIterator[Event]:
    """Every event matching ``query`` (its cursor is the starting point), page by page.

    Each page takes a pooled connection only while it is read, so a slow consumer of an export
    holds no connection or transaction open.
    """
    current = replace(query, limit=page_size)
    while True:
        async with pool.acquire() as connection:
            page = await query_events(connection, current, auditor=auditor)
        for event in page.events:
            yield event
        if page.next_cursor is None:
            return
        current = replace(current, cursor=page.next_cursor)


def jsonl_line(event: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event) + b"\n"


def csv_header(fields: Iterable[str] = EXPORT_FIELDS) -> str:
    return _csv_row(list(fields))


def csv_line(event: Mapping[str, Any], fields: Iterable[str] = EXPORT_FIELDS) -> str:
    """One CSV row; lists and JSON values are written as JSON text, absent values as empty."""
    row = export_row(event)
    return _csv_row([_csv_cell(row.get(name)) for name in fields])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _csv_row(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()
