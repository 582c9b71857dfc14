"""Server discovery: where ``/mcp/{namespace}/{server}`` goes, behind one interface.

Rule: the request path asks a ``ServerDirectory`` and never the Kubernetes API or the database.
``StaticDirectory`` serves a fixed list (the gateway config file, or the ``corral dev`` runtime,
which builds one from the same manifests); a Kubernetes watch cache implements the same protocol.
The directory also holds the compiled AccessPolicies, for the gateway's early "could any rule
let this caller in" check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from corral.api.policy import Caller, Decision, PolicyIndex, ServerRef
from corral.common.assertion import audience_for

Tenancy = Literal["shared", "perUser"]


@dataclass(frozen=True)
class ServerEntry:
    """One routable MCP server: its shim endpoint and what policies match it on."""

    namespace: str
    name: str
    shim_url: str
    tenancy: Tenancy = "shared"
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    catalog_entry: str | None = None
    startup_timeout: float = 60.0

    @property
    def route(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def audience(self) -> str:
        """The audience of the identity assertions its shim accepts."""
        return audience_for(self.namespace, self.name)

    @property
    def ref(self) -> ServerRef:
        return ServerRef(self.namespace, self.name, self.labels, self.catalog_entry)


class ServerDirectory(Protocol):
    """Finds servers by route and says whether policies could open one to a caller."""

    def lookup(self, namespace: str, name: str) -> ServerEntry | None: ...

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        """A policy decision, or None when this directory enforces no policies (the shim
        still decides every message)."""
        ...

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        """Whether ``instance`` (from a session id) is still one of the server's instances."""
        ...


class StaticDirectory:
    """A fixed set of servers and, optionally, the AccessPolicies that govern them."""

    def __init__(self, servers: Iterable[ServerEntry], policies: PolicyIndex | None = None) -> None:
        self._servers = {(s.namespace, s.name): s for s in servers}
        self._policies = policies

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._servers.get((namespace, name))

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        if self._policies is None:
            return None
        return self._policies.may_access(caller, server.ref)

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        return instance == server.shim_url
