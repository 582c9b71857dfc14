"""A lean HTTP/1.1 server for one hot endpoint: the shim's MCP port, the gateway's MCP port.

Rule: requests are parsed by llhttp (through httptools), one handler coroutine runs per request
and returns either a ``Reply`` (a whole body, sent with Content-Length) or a ``StreamReply``
(chunks from an async iterator, sent with chunked transfer encoding, honouring the socket's
back-pressure). Requests on one connection are answered in order. A body larger than
``max_body()`` is not buffered: the handler gets the request with ``oversized`` set (so it can
still authenticate and audit before refusing it) and the connection closes after the answer.
Time limits: a request's head and body must arrive within ``read_timeout`` seconds (else 408 and
the connection closes), and an idle keep-alive connection is closed after ``idle_timeout``. A
handler still running when its client goes away is cancelled. A ``Reply`` with ``close`` ends
its connection. Everything else a general web server does is out of scope.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from corral.common.deadline import Deadline

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_QUEUED = 8
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


@dataclass(init=False, slots=True)
class Request:
    """One request: its head (header names lower-cased), and its body read whole (empty when
    ``oversized``)."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    body: bytes
    oversized: bool
    declared_length: int | None

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        oversized: bool = False,
        declared_length: int | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.oversized = oversized
        self.declared_length = declared_length

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(init=False, slots=True)
class Reply:
    """A whole answer; ``after`` runs once it is handed to the socket (bookkeeping that need
    not delay the answer); ``close`` ends the connection after it."""

    status: int
    body: bytes
    headers: Iterable[tuple[str, str]]
    after: Callable[[], None] | None
    close: bool

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        after: Callable[[], None] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.after = after
        self.close = close


@dataclass(init=False)
class StreamReply:
    """An answer streamed as ``chunks`` yields; the iterator is closed if the client leaves."""

    status: int
    chunks: AsyncIterator[bytes]
    headers: Iterable[tuple[str, str]]

    def __init__(
        self, status: int, chunks: AsyncIterator[bytes], headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers


Handler = Callable[[Request], Awaitable[Reply | StreamReply]]


def _head(status: int, headers: Iterable[tuple[str, str]], extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append(extra)
    return "".join(lines).encode("utf-8", "surrogateescape")


class _Connection(asyncio.Protocol):
    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._limit = 0
        self._current: Request | None = None
        self._oversized = False
        self._reading = False
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._deadline = Deadline(self._loop, self._expire)
        self._writable: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._closing = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._deadline.set(self._server.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported here")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closing = True
        self._server.connections.discard(self)
        self._deadline.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_writer()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._current = None
        self._oversized = False
        self._reading = True
        if not self._queue and self._worker is None:
            self._deadline.set(self._server.read_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes = self._head_bytes + len(name) + len(value)
        if size > MAX_HEAD_BYTES:
            raise httptools.HttpParserError(f"the request head exceeds {MAX_HEAD_BYTES} bytes")
        self._headers.append(
            (name.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        self._current = request = self._request()
        length = request.declared_length
        self._limit = self._server.max_body()
        if length is not None and length > self._limit:
            self._dispatch_oversized(request)
        elif request.headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._oversized:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._limit:
            assert self._current is not None
            self._dispatch_oversized(self._current)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading = False
        request = self._current
        if self._oversized or request is None:
            return
        body = self._body
        request.body = body[0] if len(body) == 1 else b"".join(body)
        self._enqueue(request, self._parser.should_keep_alive())

    # requests

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError(f"the request head exceeds {MAX_HEAD_BYTES} bytes")

    def _request(self) -> Request:
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        declared = headers.get("content-length")
        return Request(
            method=self._parser.get_method().decode("ascii"),
            target=self._url.decode("utf-8", "surrogateescape"),
            headers=headers,
            body=b"",
            declared_length=int(declared) if declared is not None and declared.isdigit() else None,
        )

    def _dispatch_oversized(self, request: Request) -> None:
        self._reading = False
        request.oversized = True
        self._oversized = True
        self._enqueue(request, keep_alive=False)

    def _enqueue(self, request: Request, keep_alive: bool) -> None:
        self._queue.append((request, keep_alive))
        self._deadline.clear()
        if len(self._queue) > MAX_QUEUED and self._transport is not None:
            self._transport.pause_reading()
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._queue and not self._closing:
                request, keep_alive = self._queue.popleft()
                if self._transport is not None and len(self._queue) == MAX_QUEUED:
                    self._transport.resume_reading()
                await self._answer(request, keep_alive and not request.oversized)
        finally:
            self._worker = None
        if not self._closing:
            self._deadline.set(self._server.idle_timeout)

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            reply = await self._server.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            reply = Reply(500, b"internal error", (("Content-Type", "text/plain"),))
        transport = self._transport
        if transport is None:
            if isinstance(reply, StreamReply):
                await close_chunks(reply.chunks)
            elif reply.after is not None:
                _run_after(reply.after)
            return
        if isinstance(reply, Reply) and reply.close:
            keep_alive = False
        connection = "" if keep_alive else "Connection: close\r\n"
        if isinstance(reply, Reply):
            head = _head(reply.status, reply.headers, f"Content-Length: {len(reply.body)}\r\n")
            transport.write(head + connection.encode() + b"\r\n" + reply.body)
            if reply.after is not None:
                _run_after(reply.after)
        else:
            await self._stream(reply, connection)
        if not keep_alive:
            self._close()

    async def _stream(self, reply: StreamReply, connection: str) -> None:
        transport = self._transport
        assert transport is not None
        head = _head(reply.status, reply.headers, "Transfer-Encoding: chunked\r\n" + connection)
        transport.write(head + b"\r\n")
        # Compiled: the iterator is closed after the try statement, not in a finally block
        # (see corral/native.py on awaiting while an exception is handled).
        failure: BaseException | None = None
        try:
            async for chunk in reply.chunks:
                if not chunk:
                    continue
                if self._transport is None:
                    break
                self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self._paused_writing:
                    await self._drained()
            else:
                if self._transport is not None:
                    self._transport.write(b"0\r\n\r\n")
        except BaseException as exc:
            failure = exc
        await close_chunks(reply.chunks)
        if failure is not None:
            raise failure

    async def _drained(self) -> None:
        while self._paused_writing and self._transport is not None:
            self._writable = self._loop.create_future()
            await self._writable

    def _wake_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # closing

    def _expire(self) -> None:
        """The connection's deadline passed: a request still arriving gets 408, an idle
        connection closes (one answering is left to finish)."""
        if self._worker is None and not self._queue:
            if self._reading:
                self._refuse(408, "the request did not arrive in time")
            else:
                self._close()

    def _refuse(self, status: int, message: str) -> None:
        transport = self._transport
        if transport is not None and self._worker is None and not self._queue:
            body = message.encode()
            head = _head(
                status, (("Content-Type", "text/plain"),), f"Content-Length: {len(body)}\r\n"
            )
            transport.write(head + b"Connection: close\r\n\r\n" + body)
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _run_after(after: Callable[[], None]) -> None:
    try:
        after()
    except Exception:
        log.exception("bookkeeping after an answer failed")


async def close_chunks(chunks: AsyncIterator[bytes]) -> None:
    """Close a reply's chunk iterator (an async generator runs its cleanup)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class LeanServer:
    """Serves one handler on one listening socket."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: Callable[[], int],
        read_timeout: float = 30.0,
        idle_timeout: float = 75.0,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        # asyncio's stubs say ``sockets`` is a tuple, uvloop's servers hold a list; compiled code
        # checks declared types, so it is read untyped.
        server: Any = self._server
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop listening and drop every connection (handlers in flight are cancelled)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
