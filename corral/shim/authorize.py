"""Authorization in the shim: AccessPolicy decisions and the server's tool subset, per message.

Rule: the semantics live in `corral.api.policy`; this module only maps an MCP message and a
verified identity onto a policy request, adds the server's `tools: {allow, deny}` subset, and
says which policy and rule decided. `Authorizer` is the seam the proxy depends on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from corral.api.policies import AccessPolicy
from corral.api.policy import (
    USE_METHOD,
    Caller,
    CallerDecisions,
    Decision,
    ItemSubset,
    PolicyIndex,
    ServerRef,
)
from corral.common.assertion import Identity
from corral.mcp.targets import TargetKind

MAX_CALLERS = 1024
"""Callers kept for the assertions they came with (one assertion serves a run of calls)."""


@dataclass(init=False, slots=True)
class Verdict:
    """An authorization outcome: allowed or not, and what decided. Never changed once made."""

    allowed: bool
    reason: str
    policy: str | None
    rule: str | None

    def __init__(
        self, allowed: bool, reason: str, policy: str | None = None, rule: str | None = None
    ) -> None:
        self.allowed = allowed
        self.reason = reason
        self.policy = policy
        self.rule = rule

    def error_data(self) -> dict[str, Any]:
        """What a denial tells the client (JSON-RPC error `data`)."""
        return {"policy": self.policy, "rule": self.rule, "reason": self.reason}


class Authorizer(Protocol):
    """Decides on messages and filters list results for one server."""

    def decide(
        self,
        identity: Identity,
        method: str,
        target: tuple[TargetKind, str] | None,
        arguments: Mapping[str, Any],
    ) -> Verdict: ...

    def visible(self, identity: Identity, kind: TargetKind, name: str) -> bool: ...


def caller_of(identity: Identity) -> Caller:
    """The policy engine's view of a verified identity."""
    service_account = identity.claims.get("service_account")
    return Caller(
        username=identity.subject,
        email=identity.email,
        groups=frozenset(identity.groups),
        service_account=service_account if isinstance(service_account, str) else None,
        claims=identity.claims,
    )


class PolicyAuthorizer:
    """`Authorizer` over AccessPolicies (compiled once) and the server's tool subset."""

    def __init__(
        self,
        policies: Iterable[AccessPolicy],
        server: ServerRef,
        tools_allow: Iterable[str] | None = None,
        tools_deny: Iterable[str] | None = None,
    ) -> None:
        self._index = PolicyIndex.build(policies)
        self._server = server
        self._subset = ItemSubset.compile(tools_allow, tools_deny)
        self.problems = self._index.problems
        self._callers: dict[str, tuple[Identity, Caller, CallerDecisions]] = {}
        self._verdicts: dict[int, tuple[Decision, Verdict]] = {}

    def _caller(self, identity: Identity) -> tuple[Caller, CallerDecisions]:
        """`caller_of` and the index's decisions for that caller, kept per assertion (by jti,
        for that very identity), since one assertion serves a run of requests; at most
        ``MAX_CALLERS`` are kept."""
        kept = self._callers.get(identity.jti)
        if kept is not None and kept[0] is identity:
            return kept[1], kept[2]
        caller = caller_of(identity)
        decisions = self._index.for_caller(caller, self._server)
        if len(self._callers) >= MAX_CALLERS:
            self._callers.clear()
        self._callers[identity.jti] = (identity, caller, decisions)
        return caller, decisions

    def _verdict(self, decision: Decision) -> Verdict:
        """The verdict of a decision, made once per decision object (decisions the index
        keeps come back as the same object); at most ``MAX_CALLERS`` are kept."""
        kept = self._verdicts.get(id(decision))
        if kept is not None and kept[0] is decision:
            return kept[1]
        verdict = _verdict(decision)
        if len(self._verdicts) >= MAX_CALLERS:
            self._verdicts.clear()
        self._verdicts[id(decision)] = (decision, verdict)
        return verdict

    def decide(
        self,
        identity: Identity,
        method: str,
        target: tuple[TargetKind, str] | None,
        arguments: Mapping[str, Any],
    ) -> Verdict:
        if target is not None and target[0] is TargetKind.TOOL and not self._exposed(target[1]):
            return Verdict(False, f"tool {target[1]!r} is not exposed by this server", rule="tools")
        decisions = self._caller(identity)[1]
        name = target[1] if target is not None else None
        verdict = self._verdict(decisions.decide(method, name, arguments))
        if verdict.allowed and target is not None and method == "completion/complete":
            use = USE_METHOD[target[0].value]
            verdict = self._verdict(decisions.decide(use, name, {}))
        return verdict

    def visible(self, identity: Identity, kind: TargetKind, name: str) -> bool:
        if kind is TargetKind.TOOL and not self._exposed(name):
            return False
        caller = self._caller(identity)[0]
        items = self._index.filter_list(caller, self._server, kind.value, [name], key=str)
        return bool(items)

    def _exposed(self, name: str) -> bool:
        return self._subset.exposes(name)


def _verdict(decision: Decision) -> Verdict:
    rule = decision.rule_name
    if rule is None and decision.rule_index is not None:
        rule = f"rules[{decision.rule_index}]"
    return Verdict(decision.allowed, decision.reason, decision.policy, rule)
