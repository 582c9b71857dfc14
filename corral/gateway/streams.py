"""The gateway's streamed-answer relay, in a module of its own: routing is compiled (see
docs/performance.md) and the compiler does not take async generators.

Rule: `relay_chunks` passes an answer on chunk by chunk as it arrives, never buffering it whole;
``finished`` runs once however it ends (the upstream answer is released first), and
``complete``, when given, then gets a copy of what was passed on, however it ended, if that was
at most ``MAX_CAPTURE_BYTES`` (the caller takes only a complete message from it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from corral.common.httpclient import ClientFailure, Response
from corral.gateway.activity import MAX_CAPTURE_BYTES

log = logging.getLogger(__name__)


async def relay_chunks(
    upstream: Response,
    route: str,
    finished: Callable[[], None],
    complete: Callable[[bytes], None] | None = None,
) -> AsyncIterator[bytes]:
    """The answer's chunks; yields b"" first so the caller can start it (a started generator
    always runs its cleanup when closed). ``route`` names the server in the log."""
    captured: bytearray | None = None if complete is None else bytearray()
    try:
        yield b""
        async for chunk in upstream.chunks():
            yield chunk
            if captured is not None:
                captured += chunk
                if len(captured) > MAX_CAPTURE_BYTES:
                    captured = None
    except ClientFailure as error:
        log.warning("stream from %s ended early: %r", route, error)
    finally:
        upstream.release()
        finished()
        # Also when the client hung up first: an MCP client may close the stream as soon as it
        # has its answer, before the server's end of stream arrives.
        if captured is not None and complete is not None:
            complete(bytes(captured))
