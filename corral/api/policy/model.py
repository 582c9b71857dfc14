"""The inputs and outputs of a policy decision: caller, server, request, decision.

Rule: plain frozen dataclasses, built by the shim or gateway from what they authenticated and
parsed; nothing here reads the network or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

ItemKind = Literal["tool", "resource", "prompt"]

CALL_METHODS: Mapping[str, ItemKind] = {
    "tools/call": "tool",
    "resources/read": "resource",
    "resources/subscribe": "resource",
    "resources/unsubscribe": "resource",
    "prompts/get": "prompt",
}
"""Methods that name one item, and the kind of item they name."""

USE_METHOD: Mapping[ItemKind, str] = {
    "tool": "tools/call",
    "resource": "resources/read",
    "prompt": "prompts/get",
}
"""The method whose decision says whether a listed item is shown."""

SESSION_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)
"""Methods a caller may use on any server some Allow rule opens to them, unless a Deny matches.
List results are filtered item by item."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the gateway authenticated them. `claims` take no part in equality or
    hashing (the index keys its caches on the claims its policies name)."""

    username: str
    email: str | None = None
    groups: frozenset[str] = frozenset()
    service_account: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def cel_value(self) -> dict[str, Any]:
        """`user` as CEL sees it."""
        return {
            "name": self.username,
            "email": self.email or "",
            "groups": sorted(self.groups),
            "serviceAccount": self.service_account or "",
            "claims": dict(self.claims),
        }


@dataclass(frozen=True)
class ServerRef:
    """The server a request goes to. For a perUser instance: its parent MCPServer's namespace,
    name, labels and catalog entry (policies target servers, not instances)."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    catalog_entry: str | None = None

    @cached_property
    def cel_value(self) -> dict[str, Any]:
        """`server` as CEL sees it."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "labels": dict(self.labels),
            "catalogEntry": self.catalog_entry or "",
        }


@dataclass(frozen=True)
class Request:
    """One MCP request to decide on. `name` is the tool name, resource URI or prompt name."""

    caller: Caller
    server: ServerRef
    method: str
    name: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


Basis = Literal["rule", "session", "default"]


@dataclass(frozen=True)
class Decision:
    """The outcome, and what made it.

    `basis` is `rule` when a rule decided (then `policy` is `namespace/name` and `rule_index`
    its position), `session` when a session method was allowed because some Allow rule opens the
    server to the caller, and `default` when nothing allowed (default deny). `cel_error` carries
    the first `when` error met, with the rule it came from in `reason`.
    """

    allowed: bool
    basis: Basis
    reason: str
    policy: str | None = None
    rule_index: int | None = None
    rule_name: str | None = None
    cel_error: str | None = None
