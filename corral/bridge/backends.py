"""What a bridge session talks to: the interface shared by stdio processes and legacy SSE servers.

Rule: `SessionTable` depends only on these protocols; `children.Spawner` (stdio) and
`legacy_sse.SSELauncher` (HTTP+SSE, the 2024-11-05 transport) implement them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from corral.mcp.jsonrpc import Message


class BackendUnavailableError(Exception):
    """A session's backend could not be started; the message says why."""


class Backend(Protocol):
    """One session's server connection."""

    @property
    def started(self) -> float: ...

    @property
    def stopping(self) -> bool: ...

    async def send(self, body: bytes) -> None: ...

    async def stop(self) -> None: ...


class Launcher(Protocol):
    """Starts one backend per session. `on_exit` receives why the backend ended."""

    async def spawn(
        self,
        label: str,
        on_message: Callable[[Message], None],
        on_exit: Callable[[str], None],
    ) -> Backend: ...

    def record_exit(self, backend: Backend) -> None: ...

    async def aclose(self) -> None: ...
