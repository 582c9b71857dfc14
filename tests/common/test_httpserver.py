"""The lean server (corral.common.httpserver): real clients (aiohttp) for what clients do,
raw sockets for what they should not do (malformed, oversized, slow, pipelined, gone)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from corral.common.httpserver import Handler, LeanServer, Reply, Request, StreamReply

LOOPBACK = "127.0.0.1"
WAIT = 5.0


@dataclass
class Recorder:
    """What the handler saw, and levers for the test."""

    requests: list[Request] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    handler_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    handler_started: asyncio.Event = field(default_factory=asyncio.Event)


def make_handler(recorder: Recorder) -> Handler:
    async def handler(request: Request) -> Reply | StreamReply:
        recorder.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/held":
            recorder.handler_started.set()
            try:
                await recorder.gate.wait()
            except asyncio.CancelledError:
                recorder.handler_cancelled.set()
                raise
        if request.path == "/stream":
            return StreamReply(200, events(recorder), [("Content-Type", "text/event-stream")])
        body = b"oversized" if request.oversized else b"got " + request.body
        return Reply(200, body, [("Content-Type", "text/plain"), ("X-Target", request.target)])

    return handler


async def events(recorder: Recorder) -> AsyncIterator[bytes]:
    try:
        yield b"data: one\n\n"
        await recorder.gate.wait()
        yield b"data: two\n\n"
    finally:
        recorder.stream_closed.set()


@contextlib.asynccontextmanager
async def serving(
    read_timeout: float, idle_timeout: float
) -> AsyncIterator[tuple[LeanServer, Recorder, str]]:
    recorder = Recorder()
    server = LeanServer(
        make_handler(recorder),
        max_body=lambda: 1024,
        read_timeout=read_timeout,
        idle_timeout=idle_timeout,
    )
    await server.start(LOOPBACK, 0)
    try:
        yield server, recorder, f"http://{LOOPBACK}:{server.port}"
    finally:
        recorder.gate.set()
        await server.stop()


@pytest.fixture
async def served() -> AsyncIterator[tuple[LeanServer, Recorder, str]]:
    async with serving(read_timeout=0.5, idle_timeout=0.5) as parts:
        yield parts


async def raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT):
        return await reader.read()


async def test_requests_on_one_connection_get_their_answers(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, recorder, url = served
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for index in range(3):
            async with http.post(f"{url}/mcp?x={index}", data=f"body {index}") as response:
                assert response.status == 200
                assert await response.read() == f"got body {index}".encode()
                assert response.headers["X-Target"] == f"/mcp?x={index}"
    assert [r.method for r in recorder.requests] == ["POST"] * 3
    assert recorder.requests[0].path == "/mcp"
    assert recorder.requests[0].headers["content-type"].startswith("text/plain")
    assert all(name == name.lower() for name in recorder.requests[0].headers)


async def test_pipelined_requests_are_answered_in_order(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, _, url = served
    reader, writer = await raw(url)
    writer.write(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n2"
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\n3"
    )
    answer = await read_all(reader)
    writer.close()
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b"got 1") < answer.index(b"got 2") < answer.index(b"got 3")


async def test_a_declared_oversized_body_reaches_the_handler_flagged_then_closes(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, recorder, url = served
    reader, writer = await raw(url)
    writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 100)
    answer = await read_all(reader)  # the server closes without waiting for the rest
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in answer
    assert answer.endswith(b"oversized")
    (request,) = recorder.requests
    assert request.oversized
    assert request.declared_length == 5000
    assert request.body == b""


async def test_a_chunked_body_that_grows_too_large_is_flagged(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, recorder, url = served
    reader, writer = await raw(url)
    chunk = b"a" * 600
    writer.write(
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n" % (len(chunk), chunk) * 2
    )
    answer = await read_all(reader)
    writer.close()
    assert answer.endswith(b"oversized")
    assert recorder.requests[0].oversized


@pytest.mark.parametrize(
    "data",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["garbage", "huge-head", "smuggling"],
)
async def test_a_bad_request_gets_400_and_the_connection_closes(
    served: tuple[LeanServer, Recorder, str], data: bytes
) -> None:
    _, recorder, url = served
    reader, writer = await raw(url)
    writer.write(data)
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert recorder.requests == []


async def test_a_slow_request_is_cut_off(served: tuple[LeanServer, Recorder, str]) -> None:
    _, recorder, url = served
    reader, writer = await raw(url)
    writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    answer = await read_all(reader)  # answered after read_timeout, then closed
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close\r\n" in answer
    writer.close()
    assert recorder.requests == []


async def test_an_idle_connection_is_closed(served: tuple[LeanServer, Recorder, str]) -> None:
    _, _, url = served
    reader, writer = await raw(url)
    assert await read_all(reader) == b""
    writer.close()


async def test_a_slow_request_is_cut_off_at_the_read_timeout_under_a_long_idle_timeout() -> None:
    async with serving(read_timeout=0.3, idle_timeout=60) as (_, recorder, url):
        reader, writer = await raw(url)
        try:
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            answer = await read_all(reader)  # within WAIT, far before the idle timeout
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert recorder.requests == []


async def test_a_busy_connection_outlives_its_timeouts_and_closes_once_idle() -> None:
    async with serving(read_timeout=0.2, idle_timeout=0.2) as (_, recorder, url):
        reader, writer = await raw(url)
        try:
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.0  # five times each timeout, one request after another
            answered = 0
            while loop.time() < until:
                writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
                async with asyncio.timeout(WAIT):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                    assert b"Connection: close" not in head
                    await reader.readexactly(len(b"got hi"))
                answered += 1
            assert answered == len(recorder.requests) > 1
            assert await read_all(reader) == b""  # closed once idle
        finally:
            writer.close()


async def test_a_stream_arrives_chunk_by_chunk(served: tuple[LeanServer, Recorder, str]) -> None:
    _, recorder, url = served
    async with aiohttp.ClientSession() as http, http.get(f"{url}/stream") as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        first = await response.content.readuntil(b"\n\n")
        assert first == b"data: one\n\n"
        recorder.gate.set()
        assert await response.read() == b"data: two\n\n"
    async with asyncio.timeout(WAIT):
        await recorder.stream_closed.wait()


async def test_a_client_leaving_mid_stream_closes_the_stream(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, recorder, url = served
    reader, writer = await raw(url)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await reader.readuntil(b"data: one\n\n")
    writer.close()
    async with asyncio.timeout(WAIT):
        await recorder.stream_closed.wait()


async def test_a_client_leaving_cancels_its_handler(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, recorder, url = served
    _, writer = await raw(url)
    writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await recorder.handler_started.wait()
    writer.close()
    async with asyncio.timeout(WAIT):
        await recorder.handler_cancelled.wait()


async def test_a_failing_handler_gets_500_and_the_server_goes_on(
    served: tuple[LeanServer, Recorder, str],
) -> None:
    _, _, url = served
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/boom") as response:
            assert response.status == 500
        async with http.get(f"{url}/fine") as response:
            assert response.status == 200


async def test_expect_continue_is_honoured(served: tuple[LeanServer, Recorder, str]) -> None:
    _, _, url = served
    reader, writer = await raw(url)
    writer.write(
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    async with asyncio.timeout(WAIT):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert await reader.readexactly(6) == b"got ok"
    writer.close()


async def test_bookkeeping_runs_after_the_answer_is_sent() -> None:
    order: list[str] = []

    async def handler(request: Request) -> Reply:
        return Reply(200, b"answer", after=lambda: order.append("after"))

    server = LeanServer(handler, max_body=lambda: 1024)
    await server.start(LOOPBACK, 0)
    try:
        reader, writer = await raw(f"http://{LOOPBACK}:{server.port}")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await read_all(reader)
        writer.close()
        assert answer.endswith(b"answer")
        assert order == ["after"]
    finally:
        await server.stop()
