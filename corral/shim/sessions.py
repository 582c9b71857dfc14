"""MCP sessions as the shim sees them: each id bound to the user who created it.

Rule: a session id is never authentication. The first user seen with a session id (normally on
the initialize response) owns it; anyone else gets "unknown session". Recent request ids are
remembered per session so a response replayed on a resumed stream is still filtered.
"""

from __future__ import annotations

from collections import OrderedDict

from corral.mcp.jsonrpc import RequestId

_ENDED = ""
"""The owner of an ended session: no subject is empty, so no one matches it."""


class SessionOwners:
    """Session id -> owning subject, and (session, request id) -> method, both bounded."""

    def __init__(self, max_sessions: int = 100_000, max_pending: int = 100_000) -> None:
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._pending: OrderedDict[tuple[str, RequestId], str] = OrderedDict()
        self._clients: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_pending = max_pending

    def bind(self, session_id: str, subject: str) -> None:
        self._owners[session_id] = subject
        self._owners.move_to_end(session_id)
        while len(self._owners) > self._max_sessions:
            self._owners.popitem(last=False)

    def owned_by(self, session_id: str, subject: str) -> bool:
        """Whether `subject` may use the session (binding it on first sight)."""
        owner = self._owners.get(session_id)
        if owner is None:
            self.bind(session_id, subject)
            return True
        return owner == subject

    def end(self, session_id: str) -> None:
        """The session was deleted: nobody may use its id again."""
        self.bind(session_id, _ENDED)

    def set_client(self, session_id: str, name: str | None, version: str | None) -> None:
        """The client software that created the session (from initialize's clientInfo)."""
        self._clients[session_id] = (name, version)
        while len(self._clients) > self._max_sessions:
            self._clients.popitem(last=False)

    def client_of(self, session_id: str) -> tuple[str | None, str | None]:
        return self._clients.get(session_id, (None, None))

    def remember(self, session_id: str, request_id: RequestId, method: str) -> None:
        self._pending[(session_id, request_id)] = method
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)

    def method_of(self, session_id: str, request_id: RequestId) -> str | None:
        """The method of a recent request (kept, since a resumed stream may replay its answer)."""
        return self._pending.get((session_id, request_id))

    def __len__(self) -> int:
        return len(self._owners)
