"""The kinds Corral defines, with their names, short names and printer columns.

Rule: one table; CRD generation, samples and clients read names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.api.base import CorralModel
from corral.api.catalog import MCPCatalogEntry
from corral.api.instances import MCPServerInstance
from corral.api.policies import AccessPolicy
from corral.api.servers import MCPServer

CATEGORIES = ("corral", "mcp")


def _column(name: str, type_: str, path: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "jsonPath": path, "description": description, **extra}


_READY = _column(
    "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition status."
)
_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


@dataclass(frozen=True)
class Kind:
    """One custom resource kind."""

    model: type[CorralModel]
    kind: str
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[dict[str, Any], ...]
    description: str

    @property
    def singular(self) -> str:
        """Lower-case kind."""
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """`plural.group`."""
        return f"{self.plural}.corral.dev"


KINDS: tuple[Kind, ...] = (
    Kind(
        model=MCPServer,
        kind="MCPServer",
        plural="mcpservers",
        short_names=("mcps",),
        columns=(
            _READY,
            _column("Tenancy", "string", ".status.tenancy", "shared or perUser, as in effect."),
            _column("Tools", "integer", ".status.toolCount", "Tools found at the last probe."),
            _column("URL", "string", ".status.url", "Gateway URL for clients."),
            _AGE,
        ),
        description="An MCP server, hosted in the cluster or reached by URL.",
    ),
    Kind(
        model=MCPCatalogEntry,
        kind="MCPCatalogEntry",
        plural="mcpcatalogentries",
        short_names=("mcpce",),
        columns=(
            _column("Title", "string", ".spec.title", "Display name."),
            _column("Version", "string", ".spec.version", "Version offered."),
            _AGE,
        ),
        description="A catalog entry that MCPServers instantiate.",
    ),
    Kind(
        model=AccessPolicy,
        kind="AccessPolicy",
        plural="accesspolicies",
        short_names=("ap",),
        columns=(
            _column(
                "Valid",
                "string",
                '.status.conditions[?(@.type=="ConfigValid")].status',
                "Whether every rule compiles.",
            ),
            _AGE,
        ),
        description="Who may call which tools, resources and prompts of which servers.",
    ),
    Kind(
        model=MCPServerInstance,
        kind="MCPServerInstance",
        plural="mcpserverinstances",
        short_names=("mcpsi",),
        columns=(
            _column("Server", "string", ".spec.server", "Parent MCPServer."),
            _column("Owner", "string", ".spec.owner.username", "User served."),
            _READY,
            _column("Last-Activity", "date", ".status.lastActivity", "Time of the last call."),
            _AGE,
        ),
        description="One user's instance of a perUser MCPServer.",
    ),
)
