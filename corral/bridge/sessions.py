"""Bridge sessions: one child process per MCP session, and where each of its messages goes.

Rule: a session's messages reach only that session's streams. A response goes to the POST stream
that asked for it; a progress notification to the request that owns its token; any other
notification or server-to-client request (sampling, elicitation) to the newest request still in
flight, else to the GET stream, else to a bounded backlog the next GET stream receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict, deque
from typing import Any

from corral.bridge.backends import Backend, Launcher
from corral.mcp.jsonrpc import UPSTREAM_UNAVAILABLE, Message, RequestId, error_response

log = logging.getLogger(__name__)

BACKLOG = 1000
EXIT_WAIT_SECONDS = 5.0
"""How long a failed write waits for the backend's exit, to report why it ended."""
ENDED_REMEMBERED = 10_000
Outbox = asyncio.Queue[dict[str, Any] | None]
"""Messages for one HTTP stream; None ends the stream."""


class SessionGoneError(Exception):
    """The session's server process has exited; the client must initialize a new session."""


class BridgeSession:
    """One MCP session bound to its own server process."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.child: Backend | None = None
        self.exit_reason: str | None = None
        self._pending: dict[RequestId, Outbox] = {}
        self._progress: dict[str | int, RequestId] = {}
        self._get_stream: Outbox | None = None
        self._backlog: deque[dict[str, Any]] = deque(maxlen=BACKLOG)
        self.closed = asyncio.Event()

    def open_request(self, message: Message) -> Outbox:
        """Register a request in flight; its response and related messages go to the outbox."""
        assert message.id is not None
        outbox: Outbox = asyncio.Queue()
        self._pending[message.id] = outbox
        meta = message.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if isinstance(token, (str, int)):
            self._progress[token] = message.id
        return outbox

    def forget_request(self, request_id: RequestId) -> None:
        """The client stopped listening (or got its response)."""
        self._pending.pop(request_id, None)
        for token, owner in list(self._progress.items()):
            if owner == request_id:
                del self._progress[token]

    def open_get_stream(self) -> Outbox | None:
        """The session's one GET stream, with the backlog queued; None if one is open already."""
        if self._get_stream is not None:
            return None
        outbox: Outbox = asyncio.Queue()
        while self._backlog:
            outbox.put_nowait(self._backlog.popleft())
        self._get_stream = outbox
        return outbox

    def close_get_stream(self, outbox: Outbox) -> None:
        if self._get_stream is outbox:
            self._get_stream = None

    def deliver(self, message: Message) -> None:
        """Route one message from the server process."""
        body = message.body
        if message.is_response and message.id is not None:
            outbox = self._pending.pop(message.id, None)
            if outbox is not None:
                self.forget_request(message.id)
                outbox.put_nowait(body)
                outbox.put_nowait(None)
                return
        if message.method == "notifications/progress":
            owner = self._progress.get(message.params.get("progressToken"))  # type: ignore[arg-type]
            if owner is not None and owner in self._pending:
                self._pending[owner].put_nowait(body)
                return
        if self._pending:
            next(reversed(self._pending.values())).put_nowait(body)
        else:
            self.to_get_stream(body)

    def to_get_stream(self, body: dict[str, Any]) -> None:
        """Send a message on the GET stream, or keep it for the next one."""
        if self._get_stream is not None:
            self._get_stream.put_nowait(body)
            return
        if len(self._backlog) == self._backlog.maxlen:
            log.warning("session %s: backlog full, dropping the oldest message", self.id)
        self._backlog.append(body)

    def child_exited(self, why: str) -> None:
        """Fail every request in flight with a clear error and end the session's streams."""
        self.exit_reason = f"{why}; start a new session (initialize)"
        for request_id, outbox in self._pending.items():
            outbox.put_nowait(error_response(request_id, UPSTREAM_UNAVAILABLE, self.exit_reason))
            outbox.put_nowait(None)
        self._pending.clear()
        if self._get_stream is not None:
            self._get_stream.put_nowait(None)
        self.closed.set()

    @property
    def child_stopped(self) -> bool:
        """Whether the process was stopped on purpose (session deleted, bridge exiting)."""
        return self.child is not None and self.child.stopping

    async def send(self, body: bytes) -> None:
        """Write a message to the server process, or raise SessionGoneError."""
        if self.child is None or self.exit_reason is not None:
            raise SessionGoneError(self.exit_reason or "the session has no server process")
        try:
            await self.child.send(body)
        except (ConnectionError, BrokenPipeError) as exc:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXIT_WAIT_SECONDS):
                    await self.closed.wait()
            raise SessionGoneError(self.exit_reason or str(exc)) from exc


class SessionTable:
    """Every live session of one bridge, and the launcher that gives each its backend."""

    def __init__(self, spawner: Launcher) -> None:
        self._spawner = spawner
        self._sessions: dict[str, BridgeSession] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()

    def get(self, session_id: str) -> BridgeSession | None:
        return self._sessions.get(session_id)

    def why_ended(self, session_id: str) -> str | None:
        """Why a recently ended session ended (its process exited), if it did."""
        return self._ended.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    async def create(self) -> BridgeSession:
        """A new session with its own freshly started server process."""
        session = BridgeSession(secrets.token_urlsafe(24))
        label = f"session {session.id[:8]}"

        def exited(why: str) -> None:
            if session.child is not None:
                self._spawner.record_exit(session.child)
            self._sessions.pop(session.id, None)
            session.child_exited(why)
            if session.exit_reason is not None and not session.child_stopped:
                self._ended[session.id] = session.exit_reason
                while len(self._ended) > ENDED_REMEMBERED:
                    self._ended.popitem(last=False)

        session.child = await self._spawner.spawn(label, session.deliver, exited)
        self._sessions[session.id] = session
        return session

    async def close(self, session_id: str) -> bool:
        """End a session and its process tree; False when there was no such session."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        if session.child is not None:
            await session.child.stop()
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid) for sid in list(self._sessions)))
        await self._spawner.aclose()
