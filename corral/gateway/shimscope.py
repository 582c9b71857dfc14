"""Which servers a shim token may post audit events about.

Rule: a scope is ``namespace/server`` (one server) or ``namespace/*`` (every server in the
namespace, for the operator's one audit token Secret per namespace); pure functions only.
"""

from __future__ import annotations

SCOPE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"
"""A namespace name, ``/``, and a server name or ``*``."""

ANY_SERVER = "*"


def allows(scope: str, namespace: object, server: object) -> bool:
    """Whether an event naming ``namespace``/``server`` is within ``scope``."""
    scope_namespace, _, scope_server = scope.partition("/")
    if namespace != scope_namespace or not isinstance(server, str) or not server:
        return False
    return scope_server in (ANY_SERVER, server)
