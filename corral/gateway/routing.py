"""The MCP front door: ``/mcp/{namespace}/{server}`` (POST, GET, DELETE) forwarded to a shim.

Rule: ``serve`` answers one request whichever server received it (an ``Incoming`` in, a
``Reply`` or ``StreamReply`` out); two thin adapters feed it: ``mcp_endpoint`` on the aiohttp
application's port, and ``mcp_server``, a lean HTTP server for ``listen.mcpPort`` that serves
these routes alone. Checks run in a fixed order and each refusal is final: route shape (404),
method (405), ``Origin`` (403), bearer token (401 naming the RFC 9728 metadata), rate limit
(429), server known (404), credential limited to other servers or no policy could allow the
caller (403), body size (413) and read time (408), session id (404 when unknown or another
user's), instance running (503 with ``Retry-After``). Then one identity assertion is minted for
this request and the request goes to the shim with an allowlist of headers (never the client's
``Authorization`` or cookies); the answer streams back chunk by chunk, with the upstream session
id sealed into a gateway one. Each forwarded call is recorded with the instance manager
(``record``, in memory); the answer to a ``tools/list`` is also copied, bounded, and its tool
names recorded once it has been sent. A request is counted and logged once its answer is
complete.

A POST body (one JSON-RPC message) is read whole, bounded by ``max_body_bytes`` and
``body_timeout``, before it is forwarded; responses and SSE streams are never buffered.

The path is kept lean because every forwarded call pays it: the API key, the early policy
decision and a presented session id are each answered from a cache that keeps the order and
meaning of the checks above (see ``corral.gateway.authn``, ``directory`` and ``sessions``); a
body that has fully arrived and an instance known to be up need no timer."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from corral.common.assertion import ASSERTION_HEADER, SECRET_HEADER
from corral.common.httpclient import ClientFailure, PoolSet, Response
from corral.common.httpserver import LeanServer, Reply, Request, StreamReply, close_chunks
from corral.common.ids import RandomIds, request_id
from corral.gateway.activity import MAX_CAPTURE_BYTES, tool_names, tools_list_id
from corral.gateway.appkeys import SETTINGS
from corral.gateway.authn import Authenticator, Principal
from corral.gateway.bearer import bearer_token, challenge
from corral.gateway.directory import ServerDirectory, ServerEntry
from corral.gateway.edge import RateLimiter, origin_allowed, origin_of, valid_route
from corral.gateway.instances import InstanceManager, InstanceStarting
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.sessions import SessionCodec
from corral.gateway.settings import RoutingSettings
from corral.gateway.signing import AssertionSigner
from corral.gateway.streams import relay_chunks
from corral.mcp import jsonrpc

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
SESSION_HEADER = "Mcp-Session-Id"
FORWARDED_REQUEST_HEADERS = frozenset(
    {"accept", "content-type", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"}
)
RETURNED_HEADERS = frozenset({"content-type", "mcp-protocol-version", "cache-control", "allow"})
METHODS = ("POST", "GET", "DELETE")


class Refused(Exception):  # noqa: N818
    """A request the gateway answers itself, with a JSON-RPC error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.close = close
        self.headers = dict(headers or {})


@dataclass(init=False, slots=True)
class Call:
    """One MCP request in flight: who, where, and what to log about it."""

    request_id: str
    method: str
    started: float
    route: str
    user: str | None
    status: int

    def __init__(self, request_id: str, method: str, started: float) -> None:
        self.request_id = request_id
        self.method = method
        self.started = started
        self.route = ""
        self.user = None
        self.status = 0


class Router:
    """Everything the MCP routes share on one replica (built in ``cleanup_ctx``)."""

    def __init__(
        self,
        settings: RoutingSettings,
        *,
        public_base_url: str,
        directory: ServerDirectory,
        instances: InstanceManager,
        http: PoolSet,
        authenticator: Authenticator,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.base_url = public_base_url.rstrip("/")
        self.signer = AssertionSigner(
            settings.signing_keys,
            issuer=settings.issuer or self.base_url,
            lifetime=settings.assertion_lifetime,
        )
        self.sessions = SessionCodec(settings.session_keys, max_age=settings.session_max_age)
        self.directory = directory
        self.instances = instances
        self.limiter = RateLimiter(settings.rate_per_second, settings.rate_burst)
        self.ids = RandomIds()
        self.allowed_origins = frozenset({*settings.allowed_origins, origin_of(self.base_url)})
        self.http = http
        self.authenticator = authenticator
        self.metrics = metrics


ROUTER = web.AppKey("router", Router)


@dataclass(init=False, slots=True)
class Incoming:
    """One request at the MCP front door, from whichever server received it; ``read_body``
    returns the whole body within the size and time limits or raises ``Refused``."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    read_body: Callable[[], Awaitable[bytes]]

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.read_body = read_body


async def serve(router: Router, incoming: Incoming) -> Reply | StreamReply:
    """The answer to one MCP request; it is counted and logged once it is complete."""
    call = Call(
        request_id(incoming.headers.get(REQUEST_ID_HEADER), router.ids.next),
        incoming.method,
        time.monotonic(),
    )
    try:
        return await _serve(router, incoming, call)
    except Refused as refused:
        call.status = refused.status
        return _error_reply(refused, call, router.metrics)


def mcp_server(router: Router) -> LeanServer:
    """The MCP routes alone on a lean HTTP server (``listen.mcpPort``), for the hot path: a
    body is read whole before the handler runs, within ``maxBodyBytes`` and ``bodyTimeout``."""
    settings = router.settings

    async def handle(request: Request) -> Reply | StreamReply:
        async def read_body() -> bytes:
            declared = request.declared_length
            limit = settings.max_body_bytes
            if request.oversized or (declared is not None and declared > limit):
                raise _too_large(limit)
            return request.body

        return await serve(
            router, Incoming(request.method, request.target, request.headers, read_body)
        )

    return LeanServer(
        handle, max_body=lambda: settings.max_body_bytes, read_timeout=settings.body_timeout
    )


async def mcp_endpoint(request: web.Request) -> web.StreamResponse:
    """POST, GET and DELETE on ``/mcp/{namespace}/{server}``, on the application's port."""
    router = request.app[ROUTER]
    settings = router.settings
    reply = await serve(
        router,
        Incoming(
            request.method,
            request.raw_path,
            request.headers,
            lambda: _read_body(request, settings),
        ),
    )
    if isinstance(reply, StreamReply):
        return await _stream_to(request, reply)
    response = web.Response(status=reply.status, body=reply.body, headers=list(reply.headers))
    if reply.close:
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    if reply.after is not None:
        reply.after()
    return response


async def _stream_to(request: web.Request, reply: StreamReply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status, headers=list(reply.headers))
    # Compiled: the iterator is closed after the try statement, not in a finally block (see
    # corral/native.py on awaiting while an exception is handled).
    failure: BaseException | None = None
    gone = False
    try:
        await response.prepare(request)
        async for chunk in reply.chunks:
            await response.write(chunk)
    except ConnectionResetError:
        gone = True
    except BaseException as exc:
        failure = exc
    await close_chunks(reply.chunks)
    if failure is not None:
        raise failure
    if gone:
        log.debug("client went away mid-answer")
        return response
    await response.write_eof()
    return response


def _error_reply(refused: Refused, call: Call, metrics: GatewayMetrics) -> Reply:
    body = jsonrpc.dumps(jsonrpc.error_response(None, refused.code, str(refused)))
    headers = [
        ("Content-Type", "application/json"),
        *refused.headers.items(),
        (REQUEST_ID_HEADER, call.request_id),
    ]
    return Reply(
        refused.status,
        body,
        headers,
        after=lambda: _record(metrics, call),
        close=refused.close,
    )


def _record(metrics: GatewayMetrics, call: Call) -> None:
    metrics.count_mcp_request(call.method, call.status)
    if not log.isEnabledFor(logging.INFO):
        return
    elapsed_ms = round((time.monotonic() - call.started) * 1000, 3)
    fields = {
        "request_id": call.request_id,
        "http_method": call.method,
        "route": call.route,
        "user": call.user,
        "status": call.status,
        "duration_ms": elapsed_ms,
    }
    log.info("mcp %s %s -> %d", call.method, call.route, call.status, extra={"fields": fields})


async def _serve(router: Router, incoming: Incoming, call: Call) -> Reply | StreamReply:
    route = valid_route(incoming.target)
    if route is None:
        raise Refused(404, jsonrpc.INVALID_REQUEST, "no MCP server at this path")
    if incoming.method not in METHODS:
        raise Refused(
            405,
            jsonrpc.INVALID_REQUEST,
            f"method {incoming.method} not allowed here",
            headers={"Allow": ", ".join(METHODS)},
        )
    namespace, name = route
    call.route = f"{namespace}/{name}"
    origin = incoming.headers.get("Origin")
    if not origin_allowed(origin, router.allowed_origins):
        raise Refused(403, jsonrpc.INVALID_REQUEST, f"origin {origin!r} is not allowed")
    principal = await _authenticate(incoming, router, namespace, name)
    call.user = principal.user
    wait = router.limiter.take(principal.user)
    if wait > 0:
        raise Refused(
            429,
            jsonrpc.INVALID_REQUEST,
            "too many requests: slow down",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    server = _authorize(router, principal, namespace, name)
    body = await incoming.read_body() if incoming.method == "POST" else None
    instance, upstream_session = await _instance_for(incoming, router, server, principal)
    return await _forward(
        incoming, router, call, server, principal, instance, upstream_session, body
    )


async def _authenticate(incoming: Incoming, router: Router, namespace: str, name: str) -> Principal:
    token = bearer_token(incoming.headers)
    principal = None
    if token is not None:
        principal = await router.authenticator.authenticate(token)
    result = "ok" if principal is not None else "missing" if token is None else "invalid"
    router.metrics.count_authentication(result)
    if principal is None:
        presented = token is not None
        value = challenge(router.base_url, f"/mcp/{namespace}/{name}", token_presented=presented)
        message = "the bearer token is not valid" if presented else "a bearer token is required"
        raise Refused(401, jsonrpc.UNAUTHENTICATED, message, headers={"WWW-Authenticate": value})
    return principal


def _authorize(router: Router, principal: Principal, namespace: str, name: str) -> ServerEntry:
    server = router.directory.lookup(namespace, name)
    if server is None:
        raise Refused(404, jsonrpc.INVALID_REQUEST, f"no MCP server {namespace}/{name}")
    if not principal.may_reach(namespace, name):
        raise Refused(
            403,
            jsonrpc.ACCESS_DENIED,
            f"this credential is limited to other servers than {namespace}/{name}",
        )
    decision = router.directory.may_access(principal.caller, server)
    if decision is not None and not decision.allowed:
        raise Refused(
            403, jsonrpc.ACCESS_DENIED, f"no access policy lets you use {namespace}/{name}"
        )
    return server


async def _read_body(request: web.Request, settings: RoutingSettings) -> bytes:
    limit = settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    content = request.content
    if content.is_eof():
        body = content.read_nowait()
        if len(body) > limit:
            raise _too_large(limit)
        return body
    try:
        async with asyncio.timeout(settings.body_timeout):
            body = await request.content.read(limit + 1)
            while len(body) <= limit and not request.content.at_eof():
                body += await request.content.read(limit + 1 - len(body))
    except TimeoutError:
        raise Refused(
            408,
            jsonrpc.INVALID_REQUEST,
            f"the request body did not arrive within {settings.body_timeout:g}s",
            close=True,
        ) from None
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _too_large(limit: int) -> Refused:
    return Refused(413, jsonrpc.INVALID_REQUEST, f"the body exceeds {limit} bytes")


async def _instance_for(
    incoming: Incoming, router: Router, server: ServerEntry, principal: Principal
) -> tuple[str, str | None]:
    """The shim URL to forward to, and the upstream session id (None without a session)."""
    presented = incoming.headers.get(SESSION_HEADER)
    if presented is not None:
        ref = router.sessions.open(presented, server.route)
        if (
            ref is None
            or ref.subject != principal.user
            or not router.directory.owns_instance(server, ref.instance)
        ):
            raise Refused(404, jsonrpc.INVALID_REQUEST, "unknown session: initialize a new one")
        return ref.instance, ref.upstream_id
    running = router.instances.running(server, principal)
    if running is not None:
        return running, None
    try:
        async with asyncio.timeout(server.startup_timeout):
            return await router.instances.ensure_running(server, principal), None
    except TimeoutError:
        error = InstanceStarting(server, retry_after=5)
    except InstanceStarting as starting:
        error = starting
    raise Refused(
        503,
        jsonrpc.UPSTREAM_UNAVAILABLE,
        str(error),
        headers={"Retry-After": str(error.retry_after)},
    )


def _upstream_headers(
    incoming: Incoming,
    router: Router,
    call: Call,
    server: ServerEntry,
    principal: Principal,
    upstream_session: str | None,
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in incoming.headers.items():
        lower = name.lower()
        if lower in FORWARDED_REQUEST_HEADERS or lower.startswith("mcp-param-"):
            headers[name] = value
    minted = router.signer.mint(principal, server.audience)
    headers[ASSERTION_HEADER] = minted.assertion
    headers[SECRET_HEADER] = minted.secret
    headers[REQUEST_ID_HEADER] = call.request_id
    headers["Accept-Encoding"] = "identity"
    if upstream_session is not None:
        headers[SESSION_HEADER] = upstream_session
    return headers


async def _forward(
    incoming: Incoming,
    router: Router,
    call: Call,
    server: ServerEntry,
    principal: Principal,
    instance: str,
    upstream_session: str | None,
    body: bytes | None,
) -> Reply | StreamReply:
    headers = _upstream_headers(incoming, router, call, server, principal, upstream_session)
    pool, target = router.http.route(instance)
    try:
        upstream = await pool.request(
            incoming.method,
            target,
            headers.items(),
            body,
            wait_limit=router.settings.upstream_timeout,
            while_waiting=router.signer.prepare,
        )
    except ClientFailure as error:
        log.warning("shim for %s unreachable at %s: %r", server.route, instance, error)
        raise Refused(
            502, jsonrpc.UPSTREAM_UNAVAILABLE, f"the MCP server {server.route} is unreachable"
        ) from None
    streaming = False
    try:
        router.metrics.mcp_seconds.observe(time.monotonic() - call.started)
        returned = _returned_headers(
            incoming, router, upstream, server, principal, instance, upstream_session
        )
        returned[REQUEST_ID_HEADER] = call.request_id
        call.status = upstream.status
        router.instances.record(server, principal)
        listing = tools_list_id(body) if upstream.status == 200 else None
        if _is_small_json(upstream):
            return await _relay_whole(upstream, returned, router, call, server, principal, listing)
        complete = (
            None
            if listing is None
            else lambda answer: _record_tools(upstream, router, server, principal, listing, answer)
        )
        chunks = relay_chunks(
            upstream, server.route, lambda: _record(router.metrics, call), complete
        )
        await anext(chunks)  # started: closing it now releases the upstream and records the call
        streaming = True
        return StreamReply(upstream.status, chunks, list(returned.items()))
    finally:
        if not streaming:
            upstream.release()


def _record_tools(
    upstream: Response,
    router: Router,
    server: ServerEntry,
    principal: Principal,
    listing: Any,
    answer: bytes,
) -> None:
    """Record the tool names of a ``tools/list`` answer, once it has been passed on whole."""
    tools = tool_names(upstream.content_type, answer, listing)
    if tools is not None:
        router.instances.record(server, principal, tools)


def _is_small_json(upstream: Response) -> bool:
    """A complete JSON answer of known, bounded length: relayed in one piece, not streamed."""
    length = upstream.content_length
    return (
        upstream.content_type == "application/json"
        and length is not None
        and length <= MAX_CAPTURE_BYTES
    )


async def _relay_whole(
    upstream: Response,
    headers: dict[str, str],
    router: Router,
    call: Call,
    server: ServerEntry,
    principal: Principal,
    listing: Any | None,
) -> Reply:
    try:
        payload = await upstream.read()
    except ClientFailure as error:
        log.warning("answer from %s ended early: %r", server.route, error)
        raise Refused(
            502, jsonrpc.UPSTREAM_UNAVAILABLE, f"the MCP server {server.route} broke off its answer"
        ) from None
    if listing is not None:
        _record_tools(upstream, router, server, principal, listing, payload)
    metrics = router.metrics
    return Reply(
        upstream.status, payload, list(headers.items()), after=lambda: _record(metrics, call)
    )


def _returned_headers(
    incoming: Incoming,
    router: Router,
    upstream: Response,
    server: ServerEntry,
    principal: Principal,
    instance: str,
    presented_upstream: str | None,
) -> dict[str, str]:
    """Headers for the client; ``presented_upstream`` is the upstream id of the session the
    client presented (already opened and checked), so the sealed id is reused unchanged."""
    headers = {k: v for k, v in upstream.headers.items() if k in RETURNED_HEADERS}
    upstream_session = upstream.headers.get("mcp-session-id")
    if upstream_session is not None:
        presented = incoming.headers.get(SESSION_HEADER)
        if presented is not None and presented_upstream == upstream_session:
            headers[SESSION_HEADER] = presented
        else:
            fresh = router.sessions.new_ref(upstream_session, instance, principal.user)
            headers[SESSION_HEADER] = router.sessions.seal(fresh, server.route)
    return headers


async def protected_resource_metadata(request: web.Request) -> web.Response:
    """RFC 9728 metadata for ``/mcp/{namespace}/{server}``."""
    router = request.app[ROUTER]
    route = valid_route(request.raw_path.removeprefix("/.well-known/oauth-protected-resource"))
    if route is None or router.directory.lookup(*route) is None:
        raise web.HTTPNotFound(text="no MCP server at this path")
    document: dict[str, Any] = {
        "resource": f"{router.base_url}/mcp/{route[0]}/{route[1]}",
        "bearer_methods_supported": ["header"],
        "resource_name": f"MCP server {route[0]}/{route[1]}",
    }
    if router.settings.authorization_servers:
        document["authorization_servers"] = list(router.settings.authorization_servers)
    return web.Response(body=orjson.dumps(document), content_type="application/json")


async def jwks(request: web.Request) -> web.Response:
    """The public keys shims trust for identity assertions."""
    body = orjson.dumps(request.app[ROUTER].signer.jwks())
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "max-age=300"}
    )


def client_session(settings: RoutingSettings) -> PoolSet:
    """The replica's one client for shims: keep-alive pools per shim origin, with timeouts."""
    return PoolSet(
        max_connections=settings.max_connections, connect_timeout=settings.connect_timeout
    )


def settings_of(app: web.Application) -> RoutingSettings:
    routing = app[SETTINGS].routing
    if routing is None:
        raise RuntimeError("the MCP routes need GatewaySettings.routing")
    return routing
