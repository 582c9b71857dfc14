"""The bridge's HTTP face: streamable HTTP (session era) on one endpoint, backed by `SessionTable`.

Rule: handlers parse, hand the message to the session and stream back what the session routes to
them; they never interpret a message beyond its JSON-RPC envelope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from corral.bridge.backends import BackendUnavailableError, Launcher
from corral.bridge.children import Spawner
from corral.bridge.legacy_sse import SSELauncher
from corral.bridge.sessions import BridgeSession, Outbox, SessionGoneError, SessionTable
from corral.mcp import eras, jsonrpc, sse
from corral.mcp.jsonrpc import ProtocolError

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class BridgeSettings:
    """How the bridge runs its server and serves it."""

    argv: tuple[str, ...] = ()
    sse_url: str | None = None
    path: str = "/mcp"
    max_message_bytes: int = jsonrpc.DEFAULT_MAX_BYTES


SESSIONS = web.AppKey("sessions", SessionTable)
SETTINGS = web.AppKey("settings", BridgeSettings)


def error_reply(
    status: int, code: int, message: str, request_id: jsonrpc.RequestId | None = None
) -> web.Response:
    """An HTTP error whose body is a JSON-RPC error response."""
    body = jsonrpc.dumps(jsonrpc.error_response(request_id, code, message))
    return web.Response(body=body, status=status, content_type="application/json")


def refusal(error: ProtocolError) -> web.Response:
    return error_reply(error.http_status, error.code, error.message, error.request_id)


def _bad_origin(request: web.Request) -> web.Response | None:
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).hostname not in LOCAL_HOSTS:
        return web.Response(status=403, text=f"origin {origin!r} is not allowed here")
    return None


def _session_of(request: web.Request) -> BridgeSession | web.Response:
    session_id = request.headers.get("Mcp-Session-Id")
    if session_id is None:
        return error_reply(400, jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header")
    sessions = request.app[SESSIONS]
    session = sessions.get(session_id)
    if session is None:
        reason = sessions.why_ended(session_id)
        if reason is not None:
            return error_reply(404, jsonrpc.UPSTREAM_UNAVAILABLE, reason)
        return error_reply(
            404, jsonrpc.INVALID_REQUEST, "unknown or ended session: initialize a new one"
        )
    return session


async def handle_post(request: web.Request) -> web.StreamResponse:
    if (forbidden := _bad_origin(request)) is not None:
        return forbidden
    try:
        body = await request.read()
        message = jsonrpc.parse_message(body, max_bytes=request.app[SETTINGS].max_message_bytes)
    except ProtocolError as error:
        return refusal(error)
    if message.method == "initialize" and "Mcp-Session-Id" not in request.headers:
        return await _initialize(request, message, body)
    found = _session_of(request)
    if isinstance(found, web.Response):
        return found
    if not message.is_request:
        try:
            await found.send(body)
        except SessionGoneError as gone:
            return error_reply(404, jsonrpc.UPSTREAM_UNAVAILABLE, str(gone))
        return web.Response(status=202)
    return await _forward_request(request, found, message, body)


async def _initialize(request: web.Request, message: jsonrpc.Message, body: bytes) -> web.Response:
    if not message.is_request:
        return error_reply(400, jsonrpc.INVALID_REQUEST, "initialize must be a request")
    try:
        session = await request.app[SESSIONS].create()
    except BackendUnavailableError as exc:
        log.warning("cannot start a session: %s", exc)
        return error_reply(502, jsonrpc.UPSTREAM_UNAVAILABLE, str(exc), message.id)
    outbox = session.open_request(message)
    try:
        await session.send(body)
        response = await _next_message(outbox, session)
    except SessionGoneError as gone:
        response = jsonrpc.error_response(message.id, jsonrpc.UPSTREAM_UNAVAILABLE, str(gone))
    if response is None or "error" in response or session.exit_reason is not None:
        await request.app[SESSIONS].close(session.id)
        return web.json_response(response, status=200, dumps=_dumps)
    return web.Response(
        body=jsonrpc.dumps(response),
        content_type="application/json",
        headers={"Mcp-Session-Id": session.id},
    )


async def _next_message(
    outbox: Outbox, session: BridgeSession | None = None
) -> dict[str, Any] | None:
    """The response in an outbox; anything else meanwhile goes to the session's GET stream (a
    client that takes JSON cannot receive it on this request)."""
    while True:
        item = await outbox.get()
        if item is None or ("id" in item and "method" not in item):
            return item
        if session is not None:
            session.to_get_stream(item)


def _dumps(value: Any) -> str:
    return jsonrpc.dumps(value).decode()


async def _forward_request(
    request: web.Request, session: BridgeSession, message: jsonrpc.Message, body: bytes
) -> web.StreamResponse:
    outbox = session.open_request(message)
    try:
        await session.send(body)
    except SessionGoneError as gone:
        session.forget_request(message.id or 0)
        return error_reply(404, jsonrpc.UPSTREAM_UNAVAILABLE, str(gone), message.id)
    try:
        if not eras.accepts(request.headers.get("Accept"), "text/event-stream"):
            response = await _next_message(outbox, session)
            return web.Response(body=jsonrpc.dumps(response or {}), content_type="application/json")
        stream = await _open_sse(request)
        async for item in _drain(outbox):
            await stream.write(sse.encode_event(jsonrpc.dumps(item)))
        return stream
    finally:
        session.forget_request(message.id or 0)


async def _open_sse(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await stream.prepare(request)
    return stream


async def _drain(outbox: Outbox) -> AsyncIterator[dict[str, Any]]:
    while (item := await outbox.get()) is not None:
        yield item


async def handle_get(request: web.Request) -> web.StreamResponse:
    if (forbidden := _bad_origin(request)) is not None:
        return forbidden
    found = _session_of(request)
    if isinstance(found, web.Response):
        return found
    if not eras.accepts(request.headers.get("Accept"), "text/event-stream"):
        return web.Response(status=406, text="GET needs Accept: text/event-stream")
    outbox = found.open_get_stream()
    if outbox is None:
        return error_reply(409, jsonrpc.INVALID_REQUEST, "this session already has a GET stream")
    stream = await _open_sse(request)
    try:
        while True:
            try:
                item = await asyncio.wait_for(outbox.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await stream.write(b": keepalive\n\n")
                continue
            if item is None:
                break
            await stream.write(sse.encode_event(jsonrpc.dumps(item)))
    finally:
        found.close_get_stream(outbox)
    return stream


async def handle_delete(request: web.Request) -> web.Response:
    if (forbidden := _bad_origin(request)) is not None:
        return forbidden
    session_id = request.headers.get("Mcp-Session-Id", "")
    if not await request.app[SESSIONS].close(session_id):
        return error_reply(404, jsonrpc.INVALID_REQUEST, "unknown or ended session")
    return web.Response(status=200)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "sessions": len(request.app[SESSIONS])})


def create_app(settings: BridgeSettings) -> web.Application:
    """The bridge application: the MCP endpoint and /healthz."""
    app = web.Application(client_max_size=settings.max_message_bytes + 1)
    app[SETTINGS] = settings
    launcher: Launcher = (
        SSELauncher(settings.sse_url) if settings.sse_url is not None else Spawner(settings.argv)
    )
    app[SESSIONS] = SessionTable(launcher)
    app.router.add_post(settings.path, handle_post)
    app.router.add_get(settings.path, handle_get)
    app.router.add_delete(settings.path, handle_delete)
    app.router.add_get("/healthz", handle_healthz)

    async def stop_sessions(app: web.Application) -> None:
        await app[SESSIONS].close_all()

    app.on_shutdown.append(stop_sessions)
    return app
