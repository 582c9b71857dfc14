"""Ensure-running: the instance that serves a caller, started or woken when needed.

Rule: the router asks an ``InstanceManager`` for the shim URL before forwarding a request that
starts a session or carries none: first ``running`` (no waiting, no I/O: the URL when the
instance is known to be up), and only when that says None, ``ensure_running`` under the
server's startup timeout. Static servers always run (``AlwaysRunning``). The Kubernetes
implementation (creating a perUser ``MCPServerInstance``, scaling a server up from zero and
waking a shared server scaled to zero, waiting for Ready within ``startupTimeout``) plugs in
here; ``InstanceStarting`` becomes 503 with ``Retry-After``. After forwarding, the router tells
the manager the instance was used (``record``, never blocking), which keeps it from idling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry


class InstanceStarting(Exception):  # noqa: N818
    """The instance is not ready within the server's startup timeout; retry after a while."""

    def __init__(self, server: ServerEntry, retry_after: int) -> None:
        super().__init__(
            f"{server.route} is starting and did not become ready in "
            f"{server.startup_timeout:g}s; retry in {retry_after}s"
        )
        self.retry_after = retry_after


class InstanceManager(Protocol):
    """Returns the shim URL of a running instance of ``server`` for ``principal``, and hears
    of each use of it."""

    def running(self, server: ServerEntry, principal: Principal) -> str | None:
        """The shim URL when the instance is known to be ready now, else None (then call
        ``ensure_running``); must not block."""
        ...

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str: ...

    def record(
        self, server: ServerEntry, principal: Principal, tools: Sequence[str] | None = None
    ) -> None:
        """Note a call (and the tools a complete ``tools/list`` answered); must not block."""
        ...


class AlwaysRunning:
    """Static servers: the configured shim is the instance, and it is always up."""

    def running(self, server: ServerEntry, principal: Principal) -> str | None:
        return server.shim_url

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str:
        return server.shim_url

    def record(
        self, server: ServerEntry, principal: Principal, tools: Sequence[str] | None = None
    ) -> None:
        return None
