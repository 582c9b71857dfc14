"""A legacy HTTP+SSE MCP server (the 2024-11-05 transport) as a bridge backend.

Each bridge session opens its own SSE stream (`GET {url}`), waits for the `endpoint` event, then
posts the client's messages to that endpoint; whatever the server sends on the stream goes back
through the session's routing. The endpoint must be on the server's own origin: a server cannot
point the bridge's POSTs anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import aiohttp

from corral.bridge.backends import Backend, BackendUnavailableError
from corral.mcp.jsonrpc import Message, parse_trusted
from corral.mcp.sse import SSEEvent, SSEParser

log = logging.getLogger(__name__)


class SSEConnection:
    """One session's SSE stream and message endpoint."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        response: aiohttp.ClientResponse,
        endpoint: str,
        parser: SSEParser,
        early: list[SSEEvent],
        label: str,
        on_message: Callable[[Message], None],
        on_exit: Callable[[str], None],
    ) -> None:
        self._http = http
        self._response = response
        self._endpoint = endpoint
        self._label = label
        self._on_message = on_message
        self._on_exit = on_exit
        self._stopping = False
        self._started = time.monotonic()
        self._reader = asyncio.create_task(self._read(parser, early), name=f"{label} sse")

    @property
    def started(self) -> float:
        return self._started

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def send(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            async with self._http.post(self._endpoint, data=body, headers=headers) as response:
                if response.status >= 300:
                    detail = (await response.read())[:200].decode(errors="replace")
                    raise ConnectionError(f"the SSE server answered {response.status}: {detail}")
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"the SSE server is unreachable: {exc}") from exc

    async def _read(self, parser: SSEParser, early: list[SSEEvent]) -> None:
        why = "the MCP server closed its SSE stream"
        for event in early:
            self._dispatch(event)
        try:
            async for chunk in self._response.content.iter_any():
                for event in parser.feed(chunk):
                    self._dispatch(event)
        except (aiohttp.ClientError, ValueError) as exc:
            why = f"the MCP server's SSE stream failed: {exc}"
        finally:
            self._response.close()
        if not self._stopping:
            log.warning("%s: %s", self._label, why)
        self._on_exit(why)

    def _dispatch(self, event: SSEEvent) -> None:
        if event.event != "message" or not event.data:
            return
        message = parse_trusted(event.data)
        if message is None:
            log.warning("%s: ignoring an event that is not JSON-RPC: %.200r", self._label, event)
            return
        self._on_message(message)

    async def stop(self) -> None:
        self._stopping = True
        self._response.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class SSELauncher:
    """Opens one SSE connection per session to a legacy server at `url`."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._http: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def spawn(
        self,
        label: str,
        on_message: Callable[[Message], None],
        on_exit: Callable[[str], None],
    ) -> Backend:
        http = self._client()
        try:
            response = await http.get(self._url, headers={"Accept": "text/event-stream"})
        except aiohttp.ClientError as exc:
            raise BackendUnavailableError(
                f"cannot reach the SSE server {self._url}: {exc}"
            ) from exc
        try:
            parser = SSEParser()
            async with asyncio.timeout(self._connect_timeout):
                endpoint, early = await self._endpoint(response, parser)
        except BaseException:
            response.close()
            raise
        log.info("%s: connected to %s, posting to %s", label, self._url, endpoint)
        return SSEConnection(http, response, endpoint, parser, early, label, on_message, on_exit)

    async def _endpoint(
        self, response: aiohttp.ClientResponse, parser: SSEParser
    ) -> tuple[str, list[SSEEvent]]:
        """The message endpoint, and any events that came after it in the same read."""
        if response.status != 200:
            raise BackendUnavailableError(f"the SSE server answered {response.status}")
        async for chunk in response.content.iter_any():
            events = parser.feed(chunk)
            for index, event in enumerate(events):
                if event.event == "endpoint":
                    endpoint = self._checked(urljoin(self._url, event.data.strip()))
                    return endpoint, events[index + 1 :]
        raise BackendUnavailableError("the SSE server closed the stream before its endpoint")

    def _checked(self, endpoint: str) -> str:
        ours, theirs = urlsplit(self._url), urlsplit(endpoint)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            raise BackendUnavailableError(
                f"the SSE server named an endpoint on another origin ({endpoint}); refused"
            )
        return endpoint

    def record_exit(self, backend: Backend) -> None:
        """SSE connections are not restarted in a loop: nothing to count."""

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
