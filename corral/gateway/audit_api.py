"""Audit over HTTP: shims post batches; people query and export.

Ingest contract (``POST /api/audit/ingest``): ``Authorization: Bearer <shim token>``; body
``{"events": [...]}`` with at most ``max_ingest_events`` events, each about a server in the
token's scope. Answers: 200 ``{"stored", "duplicates", "out_of_window"}``; 400 when
any event is malformed (nothing stored; the message names ``events[i]`` and the field); 401 for
a missing or unknown shim token; 403 for an event about a server outside the token's scope
(``namespace/server``, or ``namespace/*`` for every server of a namespace); 413 for a batch too
large; 503 with ``Retry-After`` when Postgres is unavailable. Retrying a batch is always safe:
events are deduplicated on ``(time, event_id)``.

Who sees what: auditors see every event with bodies; admins see every event without bodies;
anyone else sees only their own events, without bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from corral.gateway import shimscope
from corral.gateway.appkeys import (
    AUDIT_WRITER,
    METRICS,
    POOL,
    SETTINGS,
    SHIM_TOKENS,
    is_admin,
    is_auditor,
    require_principal,
)
from corral.gateway.authn import Principal
from corral.gateway.bearer import bearer_token, json_error
from corral.gateway.settings import GatewaySettings
from corral.store import audit_query
from corral.store.audit import IngestResult
from corral.store.audit_query import AuditQuery
from corral.store.errors import InvalidInputError, StoreUnavailableError

_TEXT_FILTERS = {
    "user": "user",
    "namespace": "namespace",
    "server": "server",
    "method": "method",
    "tool": "target",
    "target": "target",
    "decision": "decision",
    "status": "status",
    "outcome": "status",
}
INGEST_PATH = "/api/audit/ingest"
"""Where shims post audit batches (the operator's ``--audit-url`` ends with it)."""
_EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


@dataclass(frozen=True)
class AuditView:
    """What a caller may read: every user's events or only ``only_user``'s; bodies or not."""

    only_user: str | None
    bodies: bool


def audit_view(settings: GatewaySettings, principal: Principal) -> AuditView:
    if is_auditor(settings, principal):
        return AuditView(only_user=None, bodies=True)
    if is_admin(settings, principal):
        return AuditView(only_user=None, bodies=False)
    return AuditView(only_user=principal.user, bodies=False)


def _time_param(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{name} is not an RFC 3339 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidInputError(f"{name} has no UTC offset; end it with 'Z' or '+00:00'")
    return parsed


def parse_query(params: dict[str, str], view: AuditView) -> AuditQuery:
    """Query-string parameters as an ``AuditQuery``, narrowed to what ``view`` allows."""
    filters: dict[str, Any] = {
        target: params[name] for name, target in _TEXT_FILTERS.items() if name in params
    }
    limit_text = params.get("limit", "100")
    if not limit_text.isdigit():
        raise InvalidInputError(f"limit must be a whole number, got {limit_text[:20]!r}")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidInputError(f"order must be 'asc' or 'desc', got {order[:20]!r}")
    query = AuditQuery(
        **filters,
        since=_time_param(params.get("since"), "since"),
        until=_time_param(params.get("until"), "until"),
        order="asc" if order == "asc" else "desc",
        limit=int(limit_text),
        cursor=params.get("cursor"),
    )
    if view.only_user is not None:
        if query.user not in (None, view.only_user):
            raise json_error(403, "forbidden", "you may read only your own audit events")
        query = replace(query, user=view.only_user)
    return query


async def _viewed_query(request: web.Request) -> tuple[AuditQuery, AuditView]:
    principal = await require_principal(request)
    view = audit_view(request.app[SETTINGS], principal)
    try:
        return parse_query(dict(request.query), view), view
    except InvalidInputError as error:
        raise json_error(400, "invalid_request", str(error)) from None


async def query_audit(request: web.Request) -> web.Response:
    """GET /api/audit: one page of events and the cursor of the next."""
    query, view = await _viewed_query(request)
    try:
        async with request.app[POOL].acquire() as connection:
            page = await audit_query.query_events(connection, query, auditor=view.bodies)
    except InvalidInputError as error:
        raise json_error(400, "invalid_request", str(error)) from None
    body = orjson.dumps({"events": page.events, "next_cursor": page.next_cursor})
    return web.Response(body=body, content_type="application/json")


async def export_audit(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/export?format=jsonl|csv: every matching event, streamed."""
    export_format = request.query.get("format", "jsonl")
    if export_format not in _EXPORT_TYPES:
        raise json_error(400, "invalid_request", "format must be 'jsonl' or 'csv'")
    query, view = await _viewed_query(request)
    try:
        audit_query.build_sql(query)
    except InvalidInputError as error:
        raise json_error(400, "invalid_request", str(error)) from None
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{_EXPORT_TYPES[export_format]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="audit.{export_format}"',
        }
    )
    await response.prepare(request)
    fields: tuple[str, ...] = audit_query.EXPORT_FIELDS
    if not view.bodies:
        fields = tuple(f for f in fields if f not in audit_query.BODY_FIELDS)
    if export_format == "csv":
        await response.write(audit_query.csv_header(fields).encode())
    events = audit_query.iterate_events(request.app[POOL], query, auditor=view.bodies)
    async for event in events:
        if export_format == "csv":
            await response.write(audit_query.csv_line(event, fields).encode())
        else:
            await response.write(audit_query.jsonl_line(event))
    await response.write_eof()
    return response


async def ingest_audit(request: web.Request) -> web.Response:
    """POST /api/audit/ingest: a shim's batch ``{"events": [...]}``, within its token's scope."""
    metrics = request.app[METRICS]
    try:
        with metrics.audit_ingest_seconds.time():
            result = await _ingest(request)
    except web.HTTPException as error:
        metrics.audit_batches.labels(_BATCH_OUTCOMES.get(error.status, "error")).inc()
        raise
    metrics.audit_batches.labels("ok").inc()
    metrics.audit_events.labels("stored").inc(result.stored)
    metrics.audit_events.labels("duplicate").inc(result.duplicates)
    metrics.audit_events.labels("out_of_window").inc(result.out_of_window)
    body = orjson.dumps(
        {
            "stored": result.stored,
            "duplicates": result.duplicates,
            "out_of_window": result.out_of_window,
        }
    )
    return web.Response(body=body, content_type="application/json")


_BATCH_OUTCOMES = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    413: "too_large",
    503: "unavailable",
}


async def _ingest(request: web.Request) -> IngestResult:
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers)
    server = None if token is None else request.app[SHIM_TOKENS].lookup(token)
    if server is None:
        raise json_error(
            401,
            "unauthorized",
            "a shim token is required",
            **{"WWW-Authenticate": 'Bearer realm="corral-shims"'},
        )
    events = await _read_events(request, settings)
    for index, event in enumerate(events):
        if isinstance(event, dict) and not shimscope.allows(
            server, event.get("namespace"), event.get("server")
        ):
            raise json_error(
                403,
                "forbidden",
                f"events[{index}] is about {event.get('namespace')}/{event.get('server')}, "
                f"outside this shim token's scope {server}",
            )
    try:
        return await request.app[AUDIT_WRITER].ingest(events)
    except InvalidInputError as error:
        raise json_error(400, "invalid_request", str(error)) from None
    except StoreUnavailableError as error:
        raise json_error(503, "unavailable", str(error), **{"Retry-After": "1"}) from None


async def _read_events(request: web.Request, settings: GatewaySettings) -> list[Any]:
    if request.content_length is not None and request.content_length > settings.max_ingest_bytes:
        raise json_error(413, "too_large", f"a batch may be at most {settings.max_ingest_bytes} B")
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise json_error(400, "invalid_request", "the body is not JSON") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise json_error(400, "invalid_request", 'the body must be {"events": [...]}')
    if len(events) > settings.max_ingest_events:
        raise json_error(
            413, "too_large", f"a batch may hold at most {settings.max_ingest_events} events"
        )
    return events
