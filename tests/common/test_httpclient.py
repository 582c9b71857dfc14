"""The lean hop client (corral.common.httpclient) against real servers.

A real aiohttp server answers the ordinary cases; a raw asyncio server produces what a
well-behaved server cannot: answers that never come, break off, are malformed, or a keep-alive
connection closed the moment it was idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from corral.common.httpclient import (
    HIGH_WATER,
    ClientFailure,
    ClientTimeout,
    OriginPool,
    PoolSet,
)

LOOPBACK = "127.0.0.1"
WAIT = 5.0


@dataclass
class Served:
    url: str
    peers: list[tuple[str, int]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """An aiohttp server: /echo answers the body back; /held waits for the gate; /stream
    sends chunks as the gate opens; /large sends 2 MiB."""
    state = Served(url="")

    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state.peers.append(peer)
        state.bodies.append(await request.read())
        state.headers.append(dict(request.headers))
        return web.json_response({"ok": True, "method": request.method})

    async def held(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        await state.gate.wait()
        state.in_flight -= 1
        return web.Response(text="released")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await state.gate.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 8192)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/held", held)
    app.router.add_get("/stream", stream)
    app.router.add_get("/large", large)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://{LOOPBACK}:{port}"
    yield state
    state.gate.set()
    await runner.cleanup()


@pytest.fixture
async def pool(served: Served) -> AsyncIterator[OriginPool]:
    pool = OriginPool(served.url, max_connections=4, connect_timeout=WAIT)
    yield pool
    await pool.close()


async def _raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://{LOOPBACK}:{port}"


@contextlib.asynccontextmanager
async def _pool_to(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[OriginPool]:
    """A pool for a raw server that answers with ``handle``; both closed afterwards."""
    server, url = await _raw_server(handle)
    pool = OriginPool(url)
    try:
        yield pool
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def _wait_until(condition: Callable[[], bool]) -> None:
    """Wait, bounded, until ``condition()`` holds (the other side runs on the same loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


async def test_a_request_gets_status_headers_and_body(pool: OriginPool, served: Served) -> None:
    async with await pool.request(
        "POST", "/echo", [("Content-Type", "application/json")], b'{"x":1}', wait_limit=WAIT
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.content_length == len(await response.read()) > 0
    assert served.bodies == [b'{"x":1}']
    assert served.headers[0]["Content-Type"] == "application/json"
    assert served.headers[0]["Host"] == served.url.removeprefix("http://")


async def test_keep_alive_reuses_one_connection(pool: OriginPool, served: Served) -> None:
    for _ in range(5):
        async with await pool.request("GET", "/echo", wait_limit=WAIT) as response:
            assert b'"ok": true' in await response.read()
    assert len(served.peers) == 5
    assert len(set(served.peers)) == 1


async def test_an_answer_released_unread_does_not_reuse_its_connection(
    pool: OriginPool, served: Served
) -> None:
    response = await pool.request("GET", "/large", wait_limit=WAIT)
    response.release()
    for _ in range(2):
        async with await pool.request("GET", "/echo", wait_limit=WAIT) as response:
            await response.read()
    assert len(set(served.peers)) == 1  # the two echo calls share a new connection


async def test_a_large_body_arrives_whole_through_back_pressure(pool: OriginPool) -> None:
    async with await pool.request("GET", "/large", wait_limit=WAIT) as response:
        await _wait_until(lambda: response._buffered >= HIGH_WATER)
        body = await response.read()
    assert body == bytes(range(256)) * 8192


async def test_a_body_past_the_read_limit_fails_whether_it_came_whole_or_in_pieces(
    pool: OriginPool,
) -> None:
    async with await pool.request("GET", "/echo", wait_limit=WAIT) as small:
        await _wait_until(lambda: small._complete)  # all of it arrived before the read
        with pytest.raises(ClientFailure, match="exceeds 4 bytes"):
            await small.read(limit=4)
    async with await pool.request("GET", "/echo", wait_limit=WAIT) as small:
        await _wait_until(lambda: small._complete)
        assert b'"ok": true' in await small.read(limit=1000)
    async with await pool.request("GET", "/large", wait_limit=WAIT) as large:
        with pytest.raises(ClientFailure, match="exceeds 100000 bytes"):
            await large.read(limit=100_000)


async def test_a_stream_is_passed_on_as_it_arrives(pool: OriginPool, served: Served) -> None:
    async with await pool.request("GET", "/stream") as response:
        chunks = response.chunks()
        assert await anext(chunks) == b"data: first\n\n"
        served.gate.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"data: second\n\n"


async def test_work_for_the_wait_runs_once_while_the_answer_is_outstanding(
    pool: OriginPool, served: Served
) -> None:
    ran: list[int] = []
    call = asyncio.create_task(
        pool.request("GET", "/held", while_waiting=lambda: ran.append(served.in_flight))
    )
    await _wait_until(lambda: served.in_flight == 1)
    assert ran == [0]  # run as soon as the request was written, before the server took it
    assert not call.done()
    served.gate.set()
    async with await call as response:
        assert await response.read() == b"released"
    assert ran == [0]


async def test_work_for_the_wait_that_fails_is_logged_and_the_request_goes_on(
    pool: OriginPool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("bookkeeping broke")

    async with await pool.request("GET", "/echo", wait_limit=WAIT, while_waiting=broken) as answer:
        assert answer.status == 200
        assert b'"ok": true' in await answer.read()
    failures = [r for r in caplog.records if "while waiting for an answer" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "bookkeeping broke" in str(failures[0].exc_info[1])


async def test_the_pool_holds_at_most_max_connections(served: Served) -> None:
    pool = OriginPool(served.url, max_connections=2)
    try:
        calls = [asyncio.create_task(pool.request("GET", "/held")) for _ in range(3)]
        await _wait_until(lambda: served.in_flight == 2)
        assert not any(call.done() for call in calls)
        served.gate.set()
        for call in calls:
            async with await call as response:
                assert await response.read() == b"released"
        assert served.most_in_flight == 2
    finally:
        await pool.close()


async def test_a_cancelled_request_frees_its_slot(served: Served) -> None:
    pool = OriginPool(served.url, max_connections=1)
    try:
        waiting = asyncio.create_task(pool.request("GET", "/held"))
        await _wait_until(lambda: served.in_flight == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with await pool.request("GET", "/echo", wait_limit=WAIT) as response:
            assert response.status == 200
    finally:
        served.gate.set()
        await pool.close()


async def test_a_request_cancelled_while_waiting_for_a_slot_gives_up_its_turn(
    served: Served,
) -> None:
    pool = OriginPool(served.url, max_connections=1)
    try:
        holding = asyncio.create_task(pool.request("GET", "/held"))
        await _wait_until(lambda: served.in_flight == 1)
        queued = asyncio.create_task(pool.request("GET", "/echo"))
        await _wait_until(lambda: len(pool._slots._waiters) == 1)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        later = asyncio.create_task(pool.request("GET", "/echo", wait_limit=WAIT))
        served.gate.set()
        async with await holding as response:
            assert await response.read() == b"released"
        async with await later as response:  # the slot went to the request still waiting
            assert response.status == 200
        assert served.most_in_flight == 1
    finally:
        served.gate.set()
        await pool.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    answered: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        answered.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # without saying "Connection: close": a keep-alive that times out
        writers.append(writer)

    async with _pool_to(handle) as pool:
        async with await pool.request("GET", "/", wait_limit=WAIT) as response:
            assert await response.read() == b"ok"
        async with await pool.request("GET", "/", wait_limit=WAIT) as response:
            assert await response.read() == b"ok"
        assert len(answered) == 2


async def test_a_reused_connection_dropped_unanswered_is_retried_once() -> None:
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                requests.append(await _read_head(reader))
            except asyncio.IncompleteReadError:
                break
            if len(requests) == 2:
                break  # the second request on this connection is dropped unanswered
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    async with _pool_to(handle) as pool:
        for _ in range(2):
            async with await pool.request("GET", "/", wait_limit=WAIT) as response:
                assert await response.read() == b"ok"
        assert len(requests) == 3


async def test_an_answer_that_never_comes_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await reader.read()  # never answers; returns when the client gives up
        writer.close()

    async with _pool_to(handle) as pool:
        with pytest.raises(ClientTimeout, match=r"did not answer within 0\.2s"):
            await pool.request("GET", "/", wait_limit=0.2)


async def _paced_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers GET / at once, GET /slow after half a second, and GET /never not at all."""
    while True:
        try:
            head = await _read_head(reader)
        except asyncio.IncompleteReadError:
            break
        if head.startswith(b"GET /never "):
            await reader.read()  # returns when the client gives up
            break
        if head.startswith(b"GET /slow "):
            await asyncio.sleep(0.5)  # a slow server, not a wait for the test
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    writer.close()


async def test_a_shorter_wait_limit_on_a_reused_connection_still_applies() -> None:
    async with _pool_to(_paced_server) as pool:
        async with await pool.request("GET", "/", wait_limit=60) as response:
            assert await response.read() == b"ok"
        started = asyncio.get_running_loop().time()
        with pytest.raises(ClientTimeout, match=r"did not answer within 0\.2s"):
            await pool.request("GET", "/never", wait_limit=0.2)
        assert asyncio.get_running_loop().time() - started < 30  # not the first request's 60s


async def test_an_earlier_requests_deadline_does_not_cut_off_a_later_one() -> None:
    async with _pool_to(_paced_server) as pool:
        async with await pool.request("GET", "/", wait_limit=0.3) as response:
            assert await response.read() == b"ok"
        # answered after the first request's deadline has passed, within its own
        async with await pool.request("GET", "/slow", wait_limit=WAIT) as response:
            assert await response.read() == b"ok"
        async with await pool.request("GET", "/", wait_limit=WAIT) as response:
            assert await response.read() == b"ok"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "broke off"),
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed answer"),
    ],
    ids=["broken-off", "not-http", "bad-chunk"],
)
async def test_a_bad_answer_is_a_clear_failure(answer: bytes, message: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with _pool_to(handle) as pool:
        with pytest.raises(ClientFailure, match=message):
            async with await pool.request("GET", "/", wait_limit=WAIT) as response:
                await response.read()


async def test_an_answer_delimited_by_closing_is_read_whole() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async with (
        _pool_to(handle) as pool,
        await pool.request("GET", "/", wait_limit=WAIT) as response,
    ):
        assert await response.read() == b"until the end"


async def test_a_refused_connection_says_so() -> None:
    server, url = await _raw_server(lambda reader, writer: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    pool = OriginPool(url)
    with pytest.raises(ClientFailure, match="cannot connect to"):
        await pool.request("GET", "/", wait_limit=WAIT)
    await pool.close()


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/x", [("X-Evil", "a\r\nInjected: yes")]),
        ("/x", [("X-Evil", "a" * 2000 + "\nInjected: yes")]),
        ("/x", [("X-Evil", "a\rInjected: yes")]),
        ("/x", [("X-Evil", "a\0b")]),
        ("/x", [("Bad Name", "v")]),
        ("/x HTTP/1.1\r\nInjected: yes", []),
        ("http://elsewhere/", []),
    ],
    ids=[
        "value-crlf",
        "value-lf-after-a-long-value",
        "value-cr",
        "value-nul",
        "name-space",
        "target-crlf",
        "absolute-target",
    ],
)
async def test_header_and_target_injection_is_refused(
    pool: OriginPool, served: Served, target: str, headers: list[tuple[str, str]]
) -> None:
    # the pool has already sent a good request with this target and header name
    async with await pool.request("GET", "/x", [("X-Evil", "fine")], wait_limit=WAIT) as answer:
        await answer.read()
    sent = len(served.peers)
    with pytest.raises(ValueError, match=r"HTTP does not allow|not an absolute path"):
        await pool.request("GET", target, headers)
    assert len(served.peers) == sent


async def test_a_pool_set_routes_urls_to_one_pool_per_origin(served: Served) -> None:
    async with PoolSet(max_connections=2) as pools:
        pool, target = pools.route(f"{served.url}/echo?x=1")
        again, other = pools.route(f"{served.url}/held")
        assert pool is again
        assert (target, other) == ("/echo?x=1", "/held")
        async with await pool.request("GET", target, wait_limit=WAIT) as response:
            assert response.status == 200
