"""The shim's MCP endpoint: verify, parse, authorize, filter, forward, stream back, audit.

Rule: every message from the client passes `_admit` (identity, strict parsing, era headers,
session ownership, policy, request filters) before a byte goes upstream; every message from the
server passes `_outbound` (list filtering, response filters) before a byte goes back. Only an
allowlist of headers crosses in either direction, so the client's credentials and the identity
assertion never reach the server. Streams are passed on event by event, never buffered whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from corral.common.assertion import (
    ASSERTION_HEADER,
    SECRET_HEADER,
    Identity,
    InvalidAssertionError,
)
from corral.common.httpclient import ClientFailure, Response
from corral.common.httpserver import Reply, Request, StreamReply
from corral.common.ids import request_id
from corral.mcp import eras, jsonrpc, sse
from corral.mcp.jsonrpc import Message, ProtocolError, RequestId
from corral.mcp.targets import (
    LIST_METHODS,
    TargetKind,
    arguments_of,
    filter_list_result,
    target_of,
    valid_name,
)
from corral.shim.audit import AuditEvent, payload
from corral.shim.runtime import Runtime, ShimState
from corral.shim.streams import relay_events
from corral.shim.tokens import TokenExchangeError

log = logging.getLogger(__name__)

CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
REQUEST_ID_HEADER = "X-Request-Id"

REQUEST_HEADERS = frozenset(
    {
        "accept",
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "mcp-method",
        "mcp-name",
    }
)
RESPONSE_HEADERS = frozenset(
    {"content-type", "mcp-session-id", "mcp-protocol-version", "cache-control", "allow"}
)
LOCAL_ORIGINS = frozenset({"localhost", "127.0.0.1", "::1"})
JSON = ("Content-Type", "application/json")
METHODS = ("POST", "GET", "DELETE")


@dataclass(init=False, slots=True)
class Exchange:
    """One HTTP exchange with the client, and the audit event it produces."""

    state: ShimState
    runtime: Runtime
    identity: Identity
    event: AuditEvent
    session_id: str | None
    request: Message | None
    target: tuple[TargetKind, str] | None

    def __init__(
        self,
        state: ShimState,
        runtime: Runtime,
        identity: Identity,
        event: AuditEvent,
        session_id: str | None,
    ) -> None:
        self.state = state
        self.runtime = runtime
        self.identity = identity
        self.event = event
        self.session_id = session_id
        self.request = None
        self.target = None

    @property
    def method(self) -> str | None:
        return self.request.method if self.request is not None else None

    def context(self) -> dict[str, Any]:
        """Who and where, as filters see it."""
        server = self.runtime.config.server
        return {
            "server": {"namespace": server.namespace, "name": server.name},
            "user": {
                "sub": self.identity.subject,
                "email": self.identity.email,
                "groups": list(self.identity.groups),
            },
            "client": {"id": self.identity.client_id, "name": self.identity.client_name},
        }


class Refusal(Exception):  # noqa: N818
    """A client message refused by the shim: the HTTP response to send instead."""

    def __init__(self, response: Reply) -> None:
        super().__init__(response.status)
        self.response = response


def rpc_reply(
    status: int,
    code: int,
    message: str,
    request_id: RequestId | None = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An HTTP response whose body is a JSON-RPC error."""
    return Reply(
        status,
        jsonrpc.dumps(jsonrpc.error_response(request_id, code, message, data)),
        [JSON, *(headers or {}).items()],
    )


def _start(request: Request, state: ShimState) -> Exchange:
    """Verify the identity assertion and open the exchange's audit event."""
    runtime = state.runtime
    server = runtime.config.server
    event = AuditEvent(
        namespace=server.namespace,
        server=server.name,
        request_id=request_id(request.headers.get(REQUEST_ID_HEADER), state.ids.next),
        id=state.ids.next(),
    )
    _check_origin(request, runtime)
    try:
        identity = runtime.verifier.verify(
            request.headers.get(ASSERTION_HEADER), request.headers.get(SECRET_HEADER)
        )
    except InvalidAssertionError as exc:
        event.status = "unauthenticated"
        event.error = {"message": str(exc)}
        event.finish("unauthenticated", 401)
        state.backlog.add(lambda: _record(state, event, answered=False))
        raise Refusal(rpc_reply(401, jsonrpc.UNAUTHENTICATED, f"unauthenticated: {exc}")) from None
    event.user = identity.subject
    event.email = identity.email
    event.groups = identity.groups
    event.client_id = identity.client_id
    event.client_name = identity.client_name
    event.client_version = identity.client_version
    session_id = request.headers.get("Mcp-Session-Id")
    event.session_id = session_id
    exchange = Exchange(state, runtime, identity, event, session_id)
    if session_id is not None and not state.owners.owned_by(session_id, identity.subject):
        _finish(exchange, "refused", 404)
        raise Refusal(
            rpc_reply(404, jsonrpc.INVALID_REQUEST, "unknown session: initialize a new one")
        )
    if session_id is not None and event.client_name is None:
        event.client_name, event.client_version = state.owners.client_of(session_id)
    return exchange


def _check_origin(request: Request, runtime: Runtime) -> None:
    origin = request.headers.get("Origin")
    if not origin:
        return
    if origin in runtime.config.allowed_origins or urlsplit(origin).hostname in LOCAL_ORIGINS:
        return
    raise Refusal(rpc_reply(403, jsonrpc.INVALID_REQUEST, f"origin {origin!r} is not allowed"))


def _finish(exchange: Exchange, status: str, http_status: int | None) -> None:
    """Close the exchange's audit event now; ship it and count it from the backlog."""
    event = exchange.event
    event.finish(status, http_status)
    answered = exchange.request is not None and exchange.request.is_request
    state = exchange.state
    state.backlog.add(lambda: _record(state, event, answered=answered))


def _record(state: ShimState, event: AuditEvent, *, answered: bool) -> None:
    method = event.method or ""
    state.shipper.submit(event.to_dict())
    state.metrics.message(method, event.status)
    if answered:
        state.metrics.answered(method, (event.latency_ms or 0) / 1000)


def _body_of(request: Request, limit: int) -> bytes:
    declared = request.declared_length
    if declared is not None and declared > limit:
        raise ProtocolError(
            jsonrpc.INVALID_REQUEST,
            f"message of {declared} bytes exceeds the limit of {limit} bytes",
            http_status=413,
        )
    if request.oversized or len(request.body) > limit:
        raise ProtocolError(
            jsonrpc.INVALID_REQUEST, f"message exceeds the limit of {limit} bytes", http_status=413
        )
    return request.body


def _refuse(exchange: Exchange, error: ProtocolError, status: str) -> Refusal:
    exchange.event.error = {"code": error.code, "message": error.message}
    _finish(exchange, status, error.http_status)
    return Refusal(rpc_reply(error.http_status, error.code, error.message, error.request_id))


async def _admit(request: Request, exchange: Exchange) -> bytes:
    """Everything a client message must pass; returns the body to forward."""
    runtime = exchange.runtime
    try:
        body = _body_of(request, runtime.config.limits.max_message_bytes)
        message = jsonrpc.parse_message(body, max_bytes=runtime.config.limits.max_message_bytes)
        if eras.era_of(request.headers, message) is eras.Era.STATELESS:
            eras.check_stateless_headers(request.headers, message)
    except ProtocolError as error:
        raise _refuse(exchange, error, "refused") from None
    exchange.request = message
    event = exchange.event
    event.method = message.method
    event.rpc_id = message.id
    if event.client_name is None:
        event.client_name, event.client_version = _client_info(message)
    if message.method is None:
        return body
    target = target_of(message)
    exchange.target = target
    mode = runtime.config.audit.payloads
    if target is not None:
        event.target_kind, event.target = target[0].value, target[1]
    event.arguments = payload(
        mode, message.params.get("arguments"), runtime.redact_paths, "arguments"
    )
    if target is not None and target[0] is not TargetKind.RESOURCE and not valid_name(target[1]):
        bad_name = ProtocolError(
            jsonrpc.INVALID_PARAMS,
            f"{target[0].value} name {target[1]!r} has characters MCP names may not use",
            http_status=200,
            request_id=message.id,
        )
        raise _refuse(exchange, bad_name, "refused")
    verdict = runtime.authorizer.decide(
        exchange.identity, message.method, target, arguments_of(message)
    )
    event.decision = {
        "allowed": verdict.allowed,
        "policy": verdict.policy,
        "rule": verdict.rule,
        "reason": verdict.reason,
    }
    if not verdict.allowed:
        exchange.state.metrics.denied(message.method)
        event.error = {"code": jsonrpc.ACCESS_DENIED, "message": verdict.reason}
        _finish(exchange, "denied", 200 if message.is_request else 403)
        raise Refusal(
            rpc_reply(
                200 if message.is_request else 403,
                jsonrpc.ACCESS_DENIED,
                f"access denied: {verdict.reason}",
                message.id,
                verdict.error_data(),
            )
        )
    tool = target[1] if target is not None else None
    if not runtime.filters.selects("request", message.method, tool):
        return body
    return await _request_filters(exchange, message, tool, body)


def _client_info(message: Message) -> tuple[str | None, str | None]:
    """The client's name and version from initialize's clientInfo or a stateless `_meta`."""
    info = message.params.get("clientInfo") if message.method == "initialize" else None
    if info is None:
        meta = message.params.get("_meta")
        info = meta.get(CLIENT_INFO_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        return None, None
    name, version = info.get("name"), info.get("version")
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) else None,
    )


async def _request_filters(
    exchange: Exchange, message: Message, tool: str | None, body: bytes
) -> bytes:
    """Run the request filters that select this message (the caller checked that some do)."""
    runtime = exchange.runtime
    assert message.method is not None
    outcome = await runtime.filters.run(
        exchange.state.egress_http,
        "request",
        message.method,
        tool,
        message.body,
        exchange.context(),
    )
    exchange.event.filters.extend(v.to_dict() for v in outcome.verdicts)
    if not outcome.allowed:
        reason = outcome.reason or "denied by a filter"
        exchange.event.error = {"code": jsonrpc.FILTER_DENIED, "message": reason}
        _finish(exchange, "filtered", 200)
        raise Refusal(rpc_reply(200, jsonrpc.FILTER_DENIED, reason, message.id))
    if outcome.message is message.body:
        return body
    return jsonrpc.dumps(outcome.message)


def _forward_headers(request: Request, runtime: Runtime) -> dict[str, str]:
    headers = {
        name: value
        for name, value in request.headers.items()
        if name in REQUEST_HEADERS or name.startswith("mcp-param-")
    }
    headers["Accept-Encoding"] = "identity"
    headers.update(runtime.config.upstream.headers)
    return headers


def _response_headers(upstream: Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream.headers.items() if k in RESPONSE_HEADERS]


async def handle(state: ShimState, request: Request) -> Reply | StreamReply:
    """The MCP endpoint: POST a message, GET the server's stream, DELETE a session."""
    if request.path != state.runtime.config.path:
        return Reply(404, b"no MCP endpoint at this path", [("Content-Type", "text/plain")])
    try:
        if request.method == "POST":
            return await _handle_post(state, request)
        if request.method == "GET":
            return await _handle_get(state, request)
        if request.method == "DELETE":
            return await _handle_delete(state, request)
    except Refusal as refusal:
        return refusal.response
    return Reply(
        405,
        b"method not allowed",
        [("Content-Type", "text/plain"), ("Allow", ", ".join(METHODS))],
    )


async def _handle_post(state: ShimState, request: Request) -> Reply | StreamReply:
    exchange = _start(request, state)
    body = await _admit(request, exchange)
    message = exchange.request
    assert message is not None
    if message.is_request and exchange.session_id is not None and message.method is not None:
        exchange.state.owners.remember(exchange.session_id, message.id or 0, message.method)
    return await _relay(request, exchange, "POST", body)


async def _handle_get(state: ShimState, request: Request) -> Reply | StreamReply:
    exchange = _start(request, state)
    exchange.event.method = "GET stream"
    return await _relay(request, exchange, "GET", None)


async def _handle_delete(state: ShimState, request: Request) -> Reply | StreamReply:
    exchange = _start(request, state)
    exchange.event.method = "DELETE session"
    response = await _relay(request, exchange, "DELETE", None)
    if exchange.session_id is not None and response.status < 300:
        exchange.state.owners.end(exchange.session_id)
    return response


async def _relay(
    request: Request, exchange: Exchange, method: str, body: bytes | None
) -> Reply | StreamReply:
    runtime = exchange.runtime
    headers = _forward_headers(request, runtime)
    if runtime.tokens is not None:
        try:
            token = await runtime.tokens.token_for(
                exchange.state.egress_http,
                exchange.identity.subject,
                request.headers[ASSERTION_HEADER],
            )
        except TokenExchangeError as exc:
            log.warning("token exchange for %s failed: %s", exchange.identity.subject, exc)
            request_id = exchange.request.id if exchange.request is not None else None
            exchange.event.error = {"code": jsonrpc.UPSTREAM_UNAVAILABLE, "message": str(exc)}
            _finish(exchange, "token_exchange_failed", 502)
            return rpc_reply(
                502, jsonrpc.UPSTREAM_UNAVAILABLE, f"token exchange failed: {exc}", request_id
            )
        headers[runtime.tokens.header] = runtime.tokens.header_value(token)
    try:
        upstream = await exchange.state.upstream_pool().request(
            method,
            runtime.upstream_target,
            headers.items(),
            body,
            wait_limit=None if method == "GET" else runtime.config.upstream.timeout_seconds,
            while_waiting=exchange.state.backlog.run,
        )
    except ClientFailure as exc:
        log.warning("upstream %s unreachable: %s", runtime.config.upstream.url, exc)
        request_id = exchange.request.id if exchange.request is not None else None
        exchange.event.error = {"code": jsonrpc.UPSTREAM_UNAVAILABLE, "message": str(exc)}
        _finish(exchange, "upstream_error", 502)
        return rpc_reply(
            502, jsonrpc.UPSTREAM_UNAVAILABLE, "the MCP server is unreachable", request_id
        )
    streaming = False
    try:
        session_id = upstream.headers.get("mcp-session-id")
        if session_id is not None and exchange.session_id is None:
            exchange.state.owners.bind(session_id, exchange.identity.subject)
            exchange.state.owners.set_client(
                session_id, exchange.event.client_name, exchange.event.client_version
            )
            exchange.session_id = session_id
            exchange.event.session_id = session_id
        if upstream.content_type == "text/event-stream":
            events = relay_events(
                upstream,
                lambda event: _outbound_event(exchange, event),
                _stream_ended(exchange, upstream),
                exchange.event.method,
            )
            await anext(events)  # started: closing it now finishes the audit and the upstream
            streaming = True
            return StreamReply(upstream.status, events, _response_headers(upstream))
        return await _relay_whole(exchange, upstream)
    finally:
        if not streaming:
            upstream.release()


async def _relay_whole(exchange: Exchange, upstream: Response) -> Reply:
    try:
        data = await upstream.read()
    except ClientFailure as exc:
        log.warning("answer from the MCP server broke off: %s", exc)
        request_id = exchange.request.id if exchange.request is not None else None
        exchange.event.error = {"code": jsonrpc.UPSTREAM_UNAVAILABLE, "message": str(exc)}
        _finish(exchange, "upstream_error", 502)
        return rpc_reply(
            502, jsonrpc.UPSTREAM_UNAVAILABLE, f"the MCP server's answer failed: {exc}", request_id
        )
    headers = _response_headers(upstream)
    if data and upstream.content_type == "application/json":
        message = jsonrpc.parse_trusted(data)
        if message is not None:
            outbound = await _outbound(exchange, message)
            if outbound is not message.body:  # changed by a filter or the list filter
                data = jsonrpc.dumps(outbound)
    status = _status_of(exchange, upstream.status)
    http_status = upstream.status
    return Reply(http_status, data, headers, after=lambda: _finish(exchange, status, http_status))


def _status_of(exchange: Exchange, http_status: int) -> str:
    if exchange.event.error is not None:
        return "error"
    return "ok" if http_status < 400 else "error"


def _stream_ended(exchange: Exchange, upstream: Response) -> Callable[[str], None]:
    """Close the audit event of a streamed answer once the stream has ended."""

    def ended(how: str) -> None:
        status = _status_of(exchange, upstream.status) if how == "complete" else how
        _finish(exchange, status, upstream.status)

    return ended


async def _outbound_event(exchange: Exchange, event: sse.SSEEvent) -> bytes:
    if not event.data:
        return sse.encode(event)
    message = jsonrpc.parse_trusted(event.data)
    if message is None:
        return sse.encode(event)
    body = await _outbound(exchange, message)
    return sse.encode_event(
        jsonrpc.dumps(body), event_id=event.id, event=event.event, retry=event.retry
    )


async def _outbound(exchange: Exchange, message: Message) -> dict[str, Any]:
    """A server message on its way to the client: filtered and recorded."""
    if message.method is not None:
        _record_server_message(exchange, message)
        return message.body
    if message.id is None:
        return message.body
    request = exchange.request
    if request is not None and request.is_request and request.id == message.id:
        method = request.method
        body = await _own_response(exchange, message)
    else:
        method = exchange.state.owners.method_of(exchange.session_id or "", message.id)
        body = message.body
    return _filter_list(exchange, method, body)


async def _own_response(exchange: Exchange, message: Message) -> dict[str, Any]:
    runtime = exchange.runtime
    event = exchange.event
    request = exchange.request
    assert request is not None
    assert request.method is not None
    body = message.body
    tool = exchange.target[1] if exchange.target else None
    if runtime.filters.selects("response", request.method, tool):
        outcome = await runtime.filters.run(
            exchange.state.egress_http, "response", request.method, tool, body, exchange.context()
        )
        event.filters.extend(v.to_dict() for v in outcome.verdicts)
        if not outcome.allowed:
            reason = outcome.reason or "denied by a filter"
            event.error = {"code": jsonrpc.FILTER_DENIED, "message": reason}
            return jsonrpc.error_response(message.id, jsonrpc.FILTER_DENIED, reason)
        body = outcome.message
    if "error" in body:
        error = body["error"]
        event.error = {"code": error.get("code"), "message": error.get("message")}
    else:
        event.result = payload(
            runtime.config.audit.payloads, body.get("result"), runtime.redact_paths, "result"
        )
    return body


def _filter_list(exchange: Exchange, method: str | None, body: dict[str, Any]) -> dict[str, Any]:
    if "result" not in body:
        return body
    if method is None:
        method = _list_method_by_shape(body["result"])
    if method is None or method not in LIST_METHODS:
        return body
    authorizer = exchange.runtime.authorizer
    identity = exchange.identity
    filtered = filter_list_result(
        method, body["result"], lambda kind, name: authorizer.visible(identity, kind, name)
    )
    if filtered is None:
        return body
    result = filtered[0]
    if "cacheScope" in result:
        result["cacheScope"] = "private"
    return {**body, "result": result}


def _list_method_by_shape(result: Any) -> str | None:
    """For a response whose request is unknown: the list method its result looks like."""
    if not isinstance(result, dict):
        return None
    for method, (_, items_key, _) in LIST_METHODS.items():
        if isinstance(result.get(items_key), list):
            return method
    return None


def _record_server_message(exchange: Exchange, message: Message) -> None:
    """Audit a request or notification the server sends to the client."""
    base = exchange.event
    server_event = AuditEvent(
        namespace=base.namespace,
        server=base.server,
        direction="server",
        method=message.method,
        request_id=base.request_id,
        rpc_id=message.id,
        session_id=exchange.session_id,
        user=base.user,
        groups=base.groups,
        client_id=base.client_id,
        client_name=base.client_name,
        client_version=base.client_version,
        id=exchange.state.ids.next(),
    )
    server_event.finish("ok")
    state = exchange.state
    state.backlog.add(lambda: state.shipper.submit(server_event.to_dict()))
