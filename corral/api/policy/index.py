"""The compiled policy index: every AccessPolicy turned into per-server lookup tables.

Semantics (the contract the shim and gateway rely on):

* A policy applies to a request when the server is in the policy's namespace and among its
  targets (named, selected by labels, or instantiated from a listed catalog entry), and the
  caller matches one of its subjects.
* A rule matches when its `methods` contain the method (or `*`), its item lists match, and its
  `when` holds. A rule without `tools`/`resources`/`prompts` matches every request of its methods;
  a rule with some of them matches only requests that name an item of a listed kind whose name
  matches (see `corral.api.policy.names` for globs and folding).
* Any matching Deny decides: denied. Otherwise the first matching Allow decides: allowed.
  Otherwise, for session methods (initialize, ping, lists, ...) the caller is allowed when some
  Allow rule of an applicable policy exists; else default deny. Ties go to the first policy by
  `namespace/name`, then the first rule.
* `when` errors never allow: an Allow whose `when` errors does not match; a Deny whose `when`
  errors matches (fails closed). A `when` that does not compile counts as erroring on every request.
* Listing: an item is shown when deciding its use (`tools/call`, `resources/read`, `prompts/get`)
  with unknown arguments could be allowed: rules whose `when` reads `args` count as matching for
  Allow and as not matching for Deny; other `when`s are evaluated as for a call.

Rule: building is the only costly step; deciding does no I/O and touches only the server's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral.api.policies import AccessPolicy, Subject
from corral.api.policy.expressions import CelError, When
from corral.api.policy.model import (
    CALL_METHODS,
    SESSION_METHODS,
    USE_METHOD,
    Caller,
    Decision,
    ItemKind,
    Request,
    ServerRef,
)
from corral.api.policy.names import GlobSet, fold, is_literal

T = TypeVar("T")
_KIND_FIELD: Mapping[ItemKind, str] = {
    "tool": "tools",
    "resource": "resources",
    "prompt": "prompts",
}
_SERVER_CACHE_MAX = 4096


@dataclass(frozen=True)
class _Subjects:
    everyone: bool
    users: frozenset[str]
    groups: frozenset[str]
    service_accounts: frozenset[str]
    claims: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def compile(cls, subjects: Sequence[Subject]) -> _Subjects:
        users = {s.user for s in subjects if s.user is not None}
        return cls(
            everyone="*" in users,
            users=frozenset(users),
            groups=frozenset(s.group for s in subjects if s.group is not None),
            service_accounts=frozenset(
                s.service_account for s in subjects if s.service_account is not None
            ),
            claims=tuple(
                (s.claim.name, frozenset(s.claim.values)) for s in subjects if s.claim is not None
            ),
        )

    def match(self, caller: Caller) -> bool:
        if self.everyone or caller.username in self.users or caller.email in self.users:
            return True
        if not self.groups.isdisjoint(caller.groups):
            return True
        if caller.service_account is not None and caller.service_account in self.service_accounts:
            return True
        return any(_claim_matches(caller.claims.get(name), values) for name, values in self.claims)


def _claim_matches(value: Any, accepted: frozenset[str]) -> bool:
    if isinstance(value, str):
        return value in accepted
    if isinstance(value, list | tuple):
        return any(isinstance(v, str) and v in accepted for v in value)
    if isinstance(value, bool | int):
        return str(value).lower() in accepted
    return False


@dataclass(frozen=True, eq=False)
class _Rule:
    order: tuple[int, int]
    policy: str
    index: int
    name: str | None
    deny: bool
    methods: frozenset[str] | None
    items: Mapping[ItemKind, GlobSet] | None
    when: When | None
    when_error: str | None
    subjects: _Subjects

    def method_matches(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def label(self) -> str:
        named = f" ({self.name})" if self.name else ""
        return f"{self.policy} rule {self.index}{named}"


@dataclass(frozen=True)
class _Policy:
    namespace: str
    name: str
    servers: frozenset[str]
    selector: Any
    catalog_entries: frozenset[str]
    subjects: _Subjects
    rules: tuple[_Rule, ...]

    def targets(self, server: ServerRef) -> bool:
        if server.namespace != self.namespace:
            return False
        if server.name in self.servers:
            return True
        if server.catalog_entry is not None and server.catalog_entry in self.catalog_entries:
            return True
        return self.selector is not None and self.selector.matches(server.labels)


@dataclass
class _KindTable:
    allow_exact: dict[str, list[_Rule]] = field(default_factory=dict)
    deny_folded: dict[str, list[_Rule]] = field(default_factory=dict)
    globbed: list[_Rule] = field(default_factory=list)

    def candidates(self, kind: ItemKind, name: str) -> list[_Rule]:
        found = list(self.allow_exact.get(name, ()))
        found.extend(self.deny_folded.get(fold(name), ()))
        found.extend(r for r in self.globbed if r.items is not None and r.items[kind].matches(name))
        return found


@dataclass
class _ServerTable:
    labels: Mapping[str, str]
    catalog_entry: str | None
    unconstrained: list[_Rule]
    kinds: dict[ItemKind, _KindTable]
    openers: list[_Rule]

    @classmethod
    def build(cls, server: ServerRef, policies: Iterable[_Policy]) -> _ServerTable:
        table = cls(dict(server.labels), server.catalog_entry, [], {}, [])
        for policy in policies:
            if policy.targets(server):
                for rule in policy.rules:
                    table._add(rule)
        return table

    def _add(self, rule: _Rule) -> None:
        if not rule.deny:
            self.openers.append(rule)
        if rule.items is None:
            self.unconstrained.append(rule)
            return
        for kind, globs in rule.items.items():
            kind_table = self.kinds.setdefault(kind, _KindTable())
            wild = False
            for pattern in globs.patterns:
                if not is_literal(pattern):
                    wild = True
                elif rule.deny:
                    kind_table.deny_folded.setdefault(fold(pattern), []).append(rule)
                else:
                    kind_table.allow_exact.setdefault(pattern, []).append(rule)
            if wild:
                kind_table.globbed.append(rule)


def _compile_rules(
    policy: AccessPolicy, ordinal: int, key: str, subjects: _Subjects
) -> tuple[list[_Rule], list[str]]:
    rules, problems = [], []
    for index, rule in enumerate(policy.spec.rules):
        when, when_error = None, None
        if rule.when is not None:
            try:
                when = When.compile(rule.when)
            except CelError as error:
                when_error = str(error)
                problems.append(f"{key} rule {index}: when {error}")
        items = {
            kind: GlobSet.compile(globs, for_deny=rule.effect == "Deny")
            for kind, attr in _KIND_FIELD.items()
            if (globs := getattr(rule, attr)) is not None
        }
        rules.append(
            _Rule(
                order=(ordinal, index),
                policy=key,
                index=index,
                name=rule.name,
                deny=rule.effect == "Deny",
                methods=None if "*" in rule.methods else frozenset(rule.methods),
                items=items or None,
                when=when,
                when_error=when_error,
                subjects=subjects,
            )
        )
    return rules, problems


class PolicyIndex:
    """All AccessPolicies, compiled for fast decisions. Immutable: build a new one on change.

    `build(policies)` compiles every policy (CEL included) once. `decide(request)` returns a
    `Decision`; `filter_list(...)` keeps the list items a caller may use; `may_access(caller,
    server)` says whether any rule opens the server to the caller (for the gateway's early check).
    """

    def __init__(self, policies: Sequence[_Policy], problems: Sequence[str]) -> None:
        self._by_namespace: dict[str, list[_Policy]] = {}
        for policy in policies:
            self._by_namespace.setdefault(policy.namespace, []).append(policy)
        self.problems: tuple[str, ...] = tuple(problems)
        self._tables: dict[tuple[str, str], _ServerTable] = {}

    @classmethod
    def build(cls, policies: Iterable[AccessPolicy]) -> PolicyIndex:
        """Compile `policies` (namespace and name from their metadata). Never raises for a bad
        `when`: that rule fails closed and the problem is listed in `problems`."""
        keyed = sorted(
            ((p.metadata.namespace or "default", p.metadata.name or "", p) for p in policies),
            key=lambda t: (t[0], t[1]),
        )
        compiled, problems = [], []
        for ordinal, (namespace, name, policy) in enumerate(keyed):
            key = f"{namespace}/{name}"
            subjects = _Subjects.compile(policy.spec.subjects)
            rules, rule_problems = _compile_rules(policy, ordinal, key, subjects)
            problems.extend(rule_problems)
            targets = policy.spec.targets
            compiled.append(
                _Policy(
                    namespace=namespace,
                    name=name,
                    servers=frozenset(targets.servers or ()),
                    selector=targets.server_selector,
                    catalog_entries=frozenset(targets.catalog_entries or ()),
                    subjects=subjects,
                    rules=tuple(rules),
                )
            )
        return cls(compiled, problems)

    def _table(self, server: ServerRef) -> _ServerTable:
        key = (server.namespace, server.name)
        table = self._tables.get(key)
        if (
            table is None
            or table.catalog_entry != server.catalog_entry
            or table.labels != server.labels
        ):
            if len(self._tables) >= _SERVER_CACHE_MAX:
                self._tables.clear()
            table = _ServerTable.build(server, self._by_namespace.get(server.namespace, ()))
            self._tables[key] = table
        return table

    def decide(self, request: Request) -> Decision:
        """Allow or deny one request, saying which policy and rule decided."""
        return _Evaluation(request, listing=False).run(self._table(request.server))

    def may_access(self, caller: Caller, server: ServerRef) -> Decision:
        """Whether some Allow rule of an applicable policy opens `server` to `caller`."""
        return self.decide(Request(caller=caller, server=server, method="ping"))

    def filter_list(
        self,
        caller: Caller,
        server: ServerRef,
        kind: ItemKind,
        items: Iterable[T],
        key: Callable[[T], str],
    ) -> list[T]:
        """The items of a `tools/list`, `resources/list` or `prompts/list` result the caller may
        use; `key` gives an item's name (tools, prompts) or URI (resources)."""
        table = self._table(server)
        method = USE_METHOD[kind]
        kept = []
        for item in items:
            request = Request(caller=caller, server=server, method=method, name=key(item))
            if _Evaluation(request, listing=True).run(table).allowed:
                kept.append(item)
        return kept


class _Evaluation:
    """One decision in progress: candidate rules, subject checks cached per policy."""

    def __init__(self, request: Request, *, listing: bool) -> None:
        self.request = request
        self.listing = listing
        self.subject_cache: dict[int, bool] = {}
        self.first_error: tuple[_Rule, str] | None = None
        self._activation: dict[str, Any] | None = None

    def run(self, table: _ServerTable) -> Decision:
        request = self.request
        kind = CALL_METHODS.get(request.method)
        candidates = list(table.unconstrained)
        if kind is not None and kind in table.kinds:
            candidates.extend(table.kinds[kind].candidates(kind, request.name or ""))
        candidates = [
            r for r in candidates if r.method_matches(request.method) and self._applies(r)
        ]
        candidates.sort(key=lambda r: (not r.deny, r.order))
        for rule in candidates:
            if self._matches(rule):
                return self._by_rule(rule)
        if request.method in SESSION_METHODS:
            opener = next((r for r in table.openers if self._applies(r)), None)
            if opener is not None:
                return Decision(
                    allowed=True,
                    basis="session",
                    reason=f"{request.method} allowed: {opener.label()} opens the server",
                    policy=opener.policy,
                    rule_index=opener.index,
                    rule_name=opener.name,
                )
        return self._default()

    def _applies(self, rule: _Rule) -> bool:
        key = id(rule.subjects)
        known = self.subject_cache.get(key)
        if known is None:
            known = self.subject_cache[key] = rule.subjects.match(self.request.caller)
        return known

    def _matches(self, rule: _Rule) -> bool:
        if rule.when_error is not None:
            self._note_error(rule, rule.when_error)
            return rule.deny
        if rule.when is None:
            return True
        if self.listing and rule.when.uses_args:
            return not rule.deny
        try:
            return rule.when.evaluate(self._cel_activation())
        except CelError as error:
            self._note_error(rule, str(error))
            return rule.deny

    def _note_error(self, rule: _Rule, error: str) -> None:
        if self.first_error is None:
            self.first_error = (rule, error)

    def _cel_activation(self) -> dict[str, Any]:
        if self._activation is None:
            request = self.request
            kind = CALL_METHODS.get(request.method)
            name = request.name or ""
            self._activation = {
                "user": request.caller.cel_value,
                "server": request.server.cel_value,
                "method": request.method,
                "tool": name if kind == "tool" else "",
                "resource": name if kind == "resource" else "",
                "prompt": name if kind == "prompt" else "",
                "args": dict(request.arguments),
            }
        return self._activation

    def _by_rule(self, rule: _Rule) -> Decision:
        error = None
        if self.first_error is not None and self.first_error[0] is rule:
            error = self.first_error[1]
        verb = "denied" if rule.deny else "allowed"
        reason = f"{self._what()} {verb} by {rule.label()}"
        if error is not None:
            reason += f": its `when` failed ({error}) and a failing Deny denies"
        return Decision(
            allowed=not rule.deny,
            basis="rule",
            reason=reason,
            policy=rule.policy,
            rule_index=rule.index,
            rule_name=rule.name,
            cel_error=error,
        )

    def _default(self) -> Decision:
        reason = f"{self._what()} denied: no policy allows it (default deny)"
        error = None
        if self.first_error is not None:
            rule, error = self.first_error
            reason += f"; {rule.label()} did not match because its `when` failed ({error})"
        return Decision(allowed=False, basis="default", reason=reason, cel_error=error)

    def _what(self) -> str:
        request = self.request
        subject = f" {request.name!r}" if request.name is not None else ""
        return f"{request.method}{subject} for {request.caller.username}"
