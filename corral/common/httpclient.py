"""A lean HTTP/1.1 client for the per-request hops: gateway to shim, shim to its MCP server.

Rule: one ``OriginPool`` per upstream origin keeps keep-alive connections (asyncio protocols,
responses parsed by llhttp through httptools) and hands each request one connection, which goes
back to the pool only after its response was read to the end. It does exactly what the hops need
and nothing else: no redirects, no cookies, no decompression, no proxy. A request on a reused
connection that the server closed before answering is retried once on a fresh connection; any
other failure is a ``ClientFailure`` (``ClientTimeout`` when a time limit ran out) that says what
happened. Response bodies stream with back-pressure: reading from the socket pauses while more
than ``HIGH_WATER`` bytes wait for the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools
from aiohttp.abc import AbstractResolver

from corral.common.deadline import Deadline
from corral.common.httperrors import ClientFailure as ClientFailure
from corral.common.httperrors import ClientTimeout as ClientTimeout
from corral.common.httperrors import RetryOnFresh

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
IDLE_SECONDS = 30.0
MAX_KNOWN = 256
"""Header names and request targets a pool remembers as already checked."""

log = logging.getLogger(__name__)


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(r"[\s\0]")


def _check_header(name: str, value: str, known_names: set[str]) -> None:
    """Refuse a header HTTP does not allow; ``known_names`` holds names already checked (a
    client sends the same few on every request), and takes new good ones up to a bound."""
    if name not in known_names:
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"header {name!r} has characters HTTP does not allow")
        if len(known_names) < MAX_KNOWN:
            known_names.add(name)
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name!r} has characters HTTP does not allow")


class _Slots:
    """At most ``size`` requests at once; the others wait in arrival order (the rule of
    ``asyncio.Semaphore``, whose every acquire costs a generator scan of its waiters)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (handed over by `give`)."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot, then cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Free a slot: to the first waiter still waiting, else back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class Response:
    """One answer: status and headers at once, the body as it arrives."""

    def __init__(self, connection: _Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: ClientFailure | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._content_type: str | None = None
        self.wait_limit: float | None = None

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters ("" when absent)."""
        known = self._content_type
        if known is None:
            raw = self.headers.get("content-type", "")
            known = self._content_type = raw.split(";", 1)[0].strip().lower()
        return known

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _finish(self, error: ClientFailure | None = None) -> None:
        if self._complete or self._error is not None:
            return
        if error is None:
            self._complete = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = (
            None
            if self.wait_limit is None
            else loop.call_later(self.wait_limit, _expire, waiter, "the answer stalled")
        )
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> bytes:
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered < LOW_WATER:
            self._connection.resume()
        return data

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (de-chunked); raises ``ClientFailure``."""
        return _BodyChunks(self)

    async def _next_chunk(self) -> bytes:
        while True:
            if self._chunks:
                return self._take()
            if self._error is not None:
                raise self._error
            if self._complete:
                raise StopAsyncIteration
            await self._wait()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; ``ClientFailure`` when it breaks off or grows past ``limit``."""
        if self._complete and len(self._chunks) <= 1:  # it all came already, in one piece
            data = self._take() if self._chunks else b""
            if limit is not None and len(data) > limit:
                raise ClientFailure(f"the answer exceeds {limit} bytes")
            return data
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise ClientFailure(f"the answer exceeds {limit} bytes")
        return b"".join(parts)

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool if it can be reused."""
        if self._released:
            return
        self._released = True
        self._connection.finished(reusable=self._complete and not self._chunks)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _expire(waiter: asyncio.Future[None], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(ClientTimeout(what))


class _BodyChunks:
    """``Response.chunks``: an async iterator object rather than an async generator, which the
    compiler does not take."""

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        return await self._response._next_chunk()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self, pool: OriginPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.idle_since = 0.0
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._received = False
        self._keep_alive = False
        self._paused = False
        self._message_done = False
        # Kept: CPython 3.11's asyncio.get_running_loop makes a getpid system call each time.
        self._loop = asyncio.get_running_loop()
        self._deadline = Deadline(self._loop, self._head_timed_out)
        self._limit = 0.0

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientFailure(f"malformed answer from {self._pool.origin}: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(ClientFailure(f"{self._pool.origin} switched protocols"))
            self.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._deadline.cancel()
        response = self._response
        if self._head is not None:
            if self.reused and not self._received:
                self._fail(RetryOnFresh())
            else:
                reason = f": {exc}" if exc else ""
                self._fail(ClientFailure(f"{self._pool.origin} closed the connection{reason}"))
        elif response is not None and not self._message_done:
            if "content-length" not in response.headers and not self._chunked(response):
                response._finish()  # an answer delimited by the end of the connection
            else:
                response._finish(ClientFailure(f"{self._pool.origin} broke off its answer"))
        self._pool.forget(self)

    # llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError(f"headers exceed {MAX_HEAD_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "surrogateescape")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        if self._head is None:
            raise httptools.HttpParserError("an answer nobody asked for")
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._headers = {}
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._deadline.clear()
        response = Response(self, status, self._headers)
        self._headers = {}
        self._response = response
        self._message_done = False
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._response is None:
            return  # an interim (1xx) answer
        self._message_done = True
        self._response._finish()

    # used by the pool and the response

    @staticmethod
    def _chunked(response: Response) -> bool:
        return "chunked" in response.headers.get("transfer-encoding", "").lower()

    def send(self, data: bytes, limit: float | None) -> asyncio.Future[Response]:
        """Write a request; the future gets the answer's head, or ``ClientTimeout`` when it
        does not come within ``limit`` seconds (None: no bound)."""
        assert self.transport is not None
        self._head = self._loop.create_future()
        self._response = None
        self._received = False
        self._head_bytes = 0
        self._message_done = False
        if limit is not None:
            self._limit = limit
            self._deadline.set(limit)
        self.transport.write(data)
        return self._head

    def _head_timed_out(self) -> None:
        head = self._head
        if head is not None and not head.done():
            origin = self._pool.origin
            head.set_exception(ClientTimeout(f"{origin} did not answer within {self._limit:g}s"))

    def _fail(self, error: Exception) -> None:
        self._deadline.clear()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._response is not None and isinstance(error, ClientFailure):
            self._response._finish(error)

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finished(self, *, reusable: bool) -> None:
        self._response = None
        reusable = reusable and self._keep_alive and self.alive and not self._paused
        if not reusable:
            self.close()
        self._pool.done(self, reusable=reusable)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class OriginPool:
    """Keep-alive connections to one origin (``http://host:port`` or ``https://...``)."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 100,
        connect_timeout: float = 10.0,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if default_port else f"{host}:{self.port}"
        https = parts.scheme == "https"
        self._tls = (ssl_context or ssl.create_default_context()) if https else None
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._slots = _Slots(max_connections)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        self._known_names: set[str] = set()
        self._known_targets: set[str] = set()

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        wait_limit: float | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> Response:
        """Send one request; the answer's status and headers. Release it when done.

        ``wait_limit`` bounds the wait for the answer's head and then each wait for more of
        its body (None: no bound, for event streams). ``while_waiting`` runs once the request
        is written, before the wait: work that can overlap with the server's."""
        if self._closed:
            raise ClientFailure(f"the client for {self.origin} is closed")
        head = self._encode(method, target, headers, body)
        if not self._slots.try_take():
            await self._slots.take()
        try:
            try:
                return await self._exchange(head, wait_limit, while_waiting, fresh=False)
            except RetryOnFresh:
                pass  # retried below: this module is compiled, so no await in an except block
            return await self._exchange(head, wait_limit, None, fresh=True)
        except BaseException:
            self._slots.give()
            raise

    def _encode(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> bytes:
        if target not in self._known_targets:
            if not target.startswith("/") or _BAD_TARGET.search(target) is not None:
                raise ValueError(f"request target {target!r} is not an absolute path")
            if len(self._known_targets) < MAX_KNOWN:
                self._known_targets.add(target)
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        names = self._known_names
        for name, value in headers:
            _check_header(name, value, names)
            lines.append(f"{name}: {value}\r\n")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("utf-8", "surrogateescape")
        return data + body if body else data

    async def _exchange(
        self,
        head: bytes,
        limit: float | None,
        while_waiting: Callable[[], None] | None,
        *,
        fresh: bool,
    ) -> Response:
        connection = None if fresh else self._take_idle()
        if connection is None:
            connection = await self._connect()
        self._busy.add(connection)
        waiter = connection.send(head, limit)
        if while_waiting is not None:
            _run_while_waiting(while_waiting)
        try:
            response = await waiter
        except BaseException:
            connection.close()
            self._busy.discard(connection)
            raise
        response.wait_limit = limit
        return response

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.alive and now - connection.idle_since < IDLE_SECONDS:
                connection.reused = True
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                host = self.host
                if self._resolver is not None:
                    host = (await self._resolver.resolve(self.host, self.port))[0]["host"]
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
        except TimeoutError:
            raise ClientTimeout(
                f"connecting to {self.origin} took longer than {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise ClientFailure(f"cannot connect to {self.origin}: {exc}") from None
        return connection

    def done(self, connection: _Connection, *, reusable: bool) -> None:
        """A response was released: its request's slot frees, its connection idles or goes."""
        self._busy.discard(connection)
        self._slots.give()
        if not reusable:
            return
        if self._closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection closed: it is no longer offered (its slot, if any, stays with its
        request until that request's answer is released)."""
        if connection in self._idle:
            self._idle.remove(connection)

    async def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()


def _run_while_waiting(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:
        log.exception("work done while waiting for an answer failed")


class PoolSet:
    """One ``OriginPool`` per origin, made on first use; ``route`` maps a URL to its pool and
    request target (remembered, since the same few shim URLs come back on every request)."""

    def __init__(self, *, max_connections: int = 100, connect_timeout: float = 10.0) -> None:
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._pools: dict[str, OriginPool] = {}
        self._routes: dict[str, tuple[OriginPool, str]] = {}

    def route(self, url: str) -> tuple[OriginPool, str]:
        known = self._routes.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = OriginPool(
                url, max_connections=self._max_connections, connect_timeout=self._connect_timeout
            )
            self._pools[origin] = pool
        if len(self._routes) >= 10_000:
            self._routes.clear()
        self._routes[url] = (pool, target)
        return pool, target

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
        self._routes.clear()

    async def __aenter__(self) -> PoolSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
