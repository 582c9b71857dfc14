"""Small builders for policy tests."""

from __future__ import annotations

from typing import Any

from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, PolicyIndex, Request, ServerRef

ALICE = Caller(username="alice", email="alice@example.com", groups=frozenset({"eng"}))
BOB = Caller(username="bob", groups=frozenset({"sales"}))
SERVER = ServerRef(namespace="team", name="files", labels={"tier": "sandbox"})


def make_policy(
    *rules: dict[str, Any],
    name: str = "p",
    namespace: str = "team",
    subjects: list[dict[str, Any]] | None = None,
    targets: dict[str, Any] | None = None,
) -> AccessPolicy:
    """An AccessPolicy with the given rules (default: group eng, server files)."""
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "subjects": subjects or [{"group": "eng"}],
                "targets": targets or {"servers": ["files"]},
                "rules": list(rules),
            },
        }
    )


def allow(**fields: Any) -> dict[str, Any]:
    """An Allow rule (methods default to tools/call)."""
    return {"effect": "Allow", "methods": ["tools/call"], **fields}


def deny(**fields: Any) -> dict[str, Any]:
    """A Deny rule (methods default to tools/call)."""
    return {"effect": "Deny", "methods": ["tools/call"], **fields}


def call(
    index: PolicyIndex,
    tool: str,
    args: dict[str, Any] | None = None,
    caller: Caller = ALICE,
    server: ServerRef = SERVER,
) -> bool:
    """Whether `caller` may call `tool` with `args`."""
    request = Request(caller, server, "tools/call", tool, args or {})
    return index.decide(request).allowed
