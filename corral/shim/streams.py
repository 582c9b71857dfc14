"""The shim's event-stream relay, in a module of its own: the proxy is compiled (see
docs/performance.md) and the compiler does not take async generators.

Rule: `relay_events` passes the server's event stream on event by event through `outbound`,
never buffering it whole, and reports how it ended exactly once through `ended`: "complete",
"incomplete" (the server's stream broke off) or "client_closed" (closed or cancelled before the
end). The upstream answer is released however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from corral.common.httpclient import ClientFailure, Response
from corral.mcp import sse

log = logging.getLogger(__name__)


async def relay_events(
    upstream: Response,
    outbound: Callable[[sse.SSEEvent], Awaitable[bytes]],
    ended: Callable[[str], None],
    label: str | None,
) -> AsyncIterator[bytes]:
    """The stream's events as bytes for the client; yields b"" first so the caller can start it
    (a started generator always runs its cleanup when closed). ``label`` names the stream in
    the log."""
    parser = sse.SSEParser()
    how = "incomplete"
    try:
        yield b""
        async for chunk in upstream.chunks():
            for event in parser.feed(chunk):
                yield await outbound(event)
        how = "complete"
    except ClientFailure as exc:
        log.info("stream for %s ended early: %s", label, exc)
    except (asyncio.CancelledError, GeneratorExit):
        ended("client_closed")
        raise
    finally:
        upstream.release()
    ended(how)
