"""Audit credentials of the local shims: one token per server, derived from one secret.

Rule: a shim may only post audit events about its own server, as in a cluster. Tokens are
HMAC-SHA256(secret, "namespace/name"), so a server added by a reload gets its token without
restarting the gateway; the gateway accepts the tokens of the servers that exist now.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from corral.gateway.bearer import TokenDirectory


def shim_token(secret: bytes, route: str) -> str:
    """The audit token of the shim serving ``route`` (``namespace/name``)."""
    return "shim_" + hmac.new(secret, route.encode(), hashlib.sha256).hexdigest()


class ShimTokens(TokenDirectory):
    """The gateway's view of shim tokens, following the current set of servers."""

    def __init__(self, secret: bytes) -> None:
        super().__init__({})
        self._secret = secret
        self._routes: frozenset[str] = frozenset()

    def set_routes(self, routes: Iterable[str]) -> None:
        self._routes = frozenset(routes)

    def lookup(self, token: str) -> str | None:
        for route in self._routes:
            if hmac.compare_digest(shim_token(self._secret, route), token):
                return route
        return None
