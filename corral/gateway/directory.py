"""Server discovery: where ``/mcp/{namespace}/{server}`` goes, behind one interface.

Rule: the request path asks a ``ServerDirectory`` and never the Kubernetes API or the database.
``StaticDirectory`` serves a fixed list (the gateway config file, or the ``corral dev`` runtime,
which builds one from the same manifests); a Kubernetes watch cache implements the same protocol.
The directory also holds the compiled AccessPolicies, for the gateway's early "could any rule
let this caller in" check, and, for the registry listings (``corral.gateway.registry``), every
server with its last observed status and the catalog of MCPCatalogEntries.

A ``StaticDirectory`` is immutable, so it remembers each early-check decision per caller and
server (bounded; callers carrying claims are not remembered, since claims take no part in a
caller's equality). Directories that change (the Kubernetes watch cache, ``corral dev``) build a
new ``StaticDirectory`` on every change of servers or policies, which starts with no
remembered decisions: a policy change takes effect on the next request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from corral.api.catalog import MCPCatalogEntry
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


@dataclass(frozen=True)
class ServerStatus:
    """What was last observed of a server, for listings only (routing never reads it).

    ``ready`` None means nothing is known; ``reason`` and ``message`` come from the Ready
    condition (or the dev runtime's state); ``tools`` are the names a ``tools/list`` answered.
    """

    ready: bool | None = None
    reason: str | None = None
    message: str | None = None
    tool_count: int | None = None
    tools: tuple[str, ...] | None = None


UNKNOWN_STATUS = ServerStatus()


def catalog_key(entry: MCPCatalogEntry) -> tuple[str, str]:
    """``(namespace, name)`` of a catalog entry (``default`` when the manifest names none)."""
    return entry.metadata.namespace or "default", entry.metadata.name or ""


class ServerDirectory(Protocol):
    """Finds servers by route, says whether policies could open one to a caller, and lists
    servers and catalog entries for the registry endpoints."""

    def lookup(self, namespace: str, name: str) -> ServerEntry | None: ...

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        """A policy decision, or None when this directory enforces no policies (the shim
        still decides every message)."""
        ...

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        """Whether ``instance`` (from a session id) is still one of the server's instances."""
        ...

    def servers(self) -> Sequence[ServerEntry]:
        """Every server, ordered by namespace and name."""
        ...

    def status(self, server: ServerEntry) -> ServerStatus:
        """The server's last observed status (``UNKNOWN_STATUS`` when none)."""
        ...

    def catalog(self) -> Sequence[MCPCatalogEntry]:
        """Every catalog entry, ordered by namespace and name."""
        ...


MAX_REMEMBERED_DECISIONS = 10_000
_DecisionKey = tuple[str, str | None, frozenset[str], str | None, str, str]
"""A caller as ``Caller`` compares them (claims aside), and a server's namespace and name."""


class StaticDirectory:
    """A fixed set of servers and, optionally, the AccessPolicies that govern them, the
    catalog entries, and the servers' statuses."""

    def __init__(
        self,
        servers: Iterable[ServerEntry],
        policies: PolicyIndex | None = None,
        *,
        catalog: Iterable[MCPCatalogEntry] = (),
        statuses: Mapping[tuple[str, str], ServerStatus] | None = None,
    ) -> None:
        self._servers = {(s.namespace, s.name): s for s in servers}
        self._ordered = tuple(self._servers[key] for key in sorted(self._servers))
        self._policies = policies
        self._catalog = tuple(sorted(catalog, key=catalog_key))
        self._statuses = dict(statuses or {})
        self._decisions: dict[_DecisionKey, tuple[ServerEntry, Decision]] = {}

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._servers.get((namespace, name))

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        if self._policies is None:
            return None
        if caller.claims:
            return self._policies.may_access(caller, server.ref)
        # Caller's fields, not the Caller: its dataclass __hash__ and __eq__ run interpreted.
        key = (
            caller.username,
            caller.email,
            caller.groups,
            caller.service_account,
            server.namespace,
            server.name,
        )
        remembered = self._decisions.get(key)
        if remembered is not None and remembered[0] is server:
            return remembered[1]
        decision = self._policies.may_access(caller, server.ref)
        if len(self._decisions) >= MAX_REMEMBERED_DECISIONS:
            self._decisions.clear()
        self._decisions[key] = (server, decision)
        return decision

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        return instance == server.shim_url

    def servers(self) -> Sequence[ServerEntry]:
        return self._ordered

    def status(self, server: ServerEntry) -> ServerStatus:
        return self._statuses.get((server.namespace, server.name), UNKNOWN_STATUS)

    def catalog(self) -> Sequence[MCPCatalogEntry]:
        return self._catalog
