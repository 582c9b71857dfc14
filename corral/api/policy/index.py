"""The compiled policy index: every AccessPolicy turned into per-server lookup tables.

Semantics (the contract the shim and gateway rely on):

* A policy applies to a request when the server is in the policy's namespace and among its
  targets (named, selected by labels, or instantiated from a listed catalog entry), and the
  caller matches one of its subjects: `user` equals the username exactly or the email ignoring
  case (so a policy naming `Mallory@Example.com` still reaches `mallory@example.com`), `group`
  and `serviceAccount` exactly, `claim` when the claim (or one of its elements) is a listed value.
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

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
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
_VIEW_CACHE_MAX = 16384
_DECIDED_MAX = 64
"""Decisions a view keeps (a caller uses a few tools again and again; views are many)."""


@dataclass(frozen=True)
class _Subjects:
    everyone: bool
    users: frozenset[str]
    emails: frozenset[str]
    groups: frozenset[str]
    service_accounts: frozenset[str]
    claims: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def compile(cls, subjects: Sequence[Subject]) -> _Subjects:
        users = {s.user for s in subjects if s.user is not None}
        return cls(
            everyone="*" in users,
            users=frozenset(users),
            emails=frozenset(u.casefold() for u in users if "@" in u),
            groups=frozenset(s.group for s in subjects if s.group is not None),
            service_accounts=frozenset(
                s.service_account for s in subjects if s.service_account is not None
            ),
            claims=tuple(
                (s.claim.name, frozenset(s.claim.values)) for s in subjects if s.claim is not None
            ),
        )

    def match(self, caller: Caller) -> bool:
        if self.everyone or caller.username in self.users:
            return True
        if caller.email is not None and caller.email.casefold() in self.emails:
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
    label: str = field(init=False)
    simple: bool = field(init=False)
    precedence: tuple[bool, tuple[int, int]] = field(init=False)
    decision: Decision = field(init=False)
    session_decision: Decision = field(init=False)

    def __post_init__(self) -> None:
        named = f" ({self.name})" if self.name else ""
        label = f"{self.policy} rule {self.index}{named}"
        verb = "denied" if self.deny else "allowed"
        derived = {
            "label": label,
            "simple": self.when is None and self.when_error is None,
            "precedence": (not self.deny, self.order),
            "decision": self.decided(f"{verb} by {label}"),
            "session_decision": Decision(
                allowed=True,
                basis="session",
                reason=f"session method allowed: {label} opens the server",
                policy=self.policy,
                rule_index=self.index,
                rule_name=self.name,
            ),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def decided(self, reason: str, cel_error: str | None = None) -> Decision:
        return Decision(
            allowed=not self.deny,
            basis="rule",
            reason=reason,
            policy=self.policy,
            rule_index=self.index,
            rule_name=self.name,
            cel_error=cel_error,
        )


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
class _Prefixes:
    """Rules keyed by the literal prefix of their `prefix*` globs."""

    by_prefix: dict[str, list[_Rule]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    def add(self, prefix: str, rule: _Rule) -> None:
        self.by_prefix.setdefault(prefix, []).append(rule)
        if len(prefix) not in self.lengths:
            self.lengths.append(len(prefix))
            self.lengths.sort()

    def find(self, name: str, found: list[_Rule]) -> None:
        for length in self.lengths:
            if length > len(name):
                return
            rules = self.by_prefix.get(name[:length])
            if rules:
                found.extend(rules)


@dataclass
class _KindTable:
    """One kind's rules: literal names, `prefix*` globs, and other globs.

    Allow rules are keyed by exact names and prefixes; Deny rules also by folded ones.
    """

    allow_exact: dict[str, list[_Rule]] = field(default_factory=dict)
    deny_folded: dict[str, list[_Rule]] = field(default_factory=dict)
    prefixes: _Prefixes = field(default_factory=_Prefixes)
    folded_prefixes: _Prefixes = field(default_factory=_Prefixes)
    globbed: list[tuple[_Rule, GlobSet]] = field(default_factory=list)

    def add(self, rule: _Rule, patterns: Iterable[str]) -> None:
        others = []
        for pattern in patterns:
            prefix = pattern[:-1]
            if is_literal(pattern):
                if rule.deny:
                    self.deny_folded.setdefault(fold(pattern), []).append(rule)
                else:
                    self.allow_exact.setdefault(pattern, []).append(rule)
            elif pattern.endswith("*") and is_literal(prefix):
                self.prefixes.add(prefix, rule)
                if rule.deny:
                    self.folded_prefixes.add(fold(prefix), rule)
            else:
                others.append(pattern)
        if others:
            self.globbed.append((rule, GlobSet.compile(others, for_deny=rule.deny)))

    def candidates(self, name: str, found: list[_Rule]) -> None:
        found.extend(self.allow_exact.get(name, ()))
        folded = fold(name)
        found.extend(self.deny_folded.get(folded, ()))
        self.prefixes.find(name, found)
        self.folded_prefixes.find(folded, found)
        found.extend(rule for rule, globs in self.globbed if globs.matches(name))


@dataclass
class _View:
    """The rules of one server that apply to one caller, indexed by item name."""

    unconstrained: list[_Rule] = field(default_factory=list)
    kinds: dict[ItemKind, _KindTable] = field(default_factory=dict)
    openers: list[_Rule] = field(default_factory=list)
    decided: dict[tuple[str, str | None], Decision] = field(default_factory=dict)

    @classmethod
    def build(cls, rules: Iterable[_Rule]) -> _View:
        view = cls()
        for rule in rules:
            view._add(rule)
        return view

    def _add(self, rule: _Rule) -> None:
        if not rule.deny:
            self.openers.append(rule)
        if rule.items is None:
            self.unconstrained.append(rule)
            return
        for kind, globs in rule.items.items():
            self.kinds.setdefault(kind, _KindTable()).add(rule, globs.patterns)

    def candidates(self, method: str, name: str | None) -> list[_Rule]:
        """Rules whose method and item match (unordered)."""
        found = list(self.unconstrained)
        kind = CALL_METHODS.get(method)
        if kind is not None and kind in self.kinds:
            self.kinds[kind].candidates(name or "", found)
        return [r for r in found if r.methods is None or method in r.methods]

    def decide(self, request: Request, *, listing: bool) -> Decision:
        """The decision for `request`; CEL runs only when a candidate rule has a `when`.
        A decision no `when` took part in depends only on the method and the name, and is
        kept for them (at most ``_DECIDED_MAX`` per view)."""
        key = (request.method, request.name)
        decision = self.decided.get(key)
        if decision is not None:
            return decision
        found = self.candidates(request.method, request.name)
        if found and not all(rule.simple for rule in found):
            found.sort(key=_PRECEDENCE)
            decision = _Evaluation(request, listing=listing).run(found)
            if decision is not None:
                return decision
            return self._fallback(request.method)
        decision = min(found, key=_PRECEDENCE).decision if found else self._fallback(request.method)
        if len(self.decided) >= _DECIDED_MAX:
            self.decided.clear()
        self.decided[key] = decision
        return decision

    def _fallback(self, method: str) -> Decision:
        """When no rule decides: a session method is let through by any Allow rule."""
        if self.openers and method in SESSION_METHODS:
            return self.openers[0].session_decision
        return _DEFAULT_DENY


_PRECEDENCE = attrgetter("precedence")
_DEFAULT_DENY = Decision(
    allowed=False, basis="default", reason="no policy allows it (default deny)"
)


@dataclass
class _ServerTable:
    """The rules targeting one server, and per-caller views of them (built on first use)."""

    labels: Mapping[str, str]
    catalog_entry: str | None
    rules: list[_Rule]
    views: dict[Hashable, _View] = field(default_factory=dict)

    @classmethod
    def build(cls, server: ServerRef, policies: Iterable[_Policy]) -> _ServerTable:
        rules = [rule for p in policies if p.targets(server) for rule in p.rules]
        return cls(dict(server.labels), server.catalog_entry, rules)

    def view(self, caller: Caller, key: Hashable) -> _View:
        view = self.views.get(key)
        if view is None:
            if len(self.views) >= _VIEW_CACHE_MAX:
                self.views.clear()
            matched: dict[int, bool] = {}
            applicable = []
            for rule in self.rules:
                subjects = id(rule.subjects)
                if subjects not in matched:
                    matched[subjects] = rule.subjects.match(caller)
                if matched[subjects]:
                    applicable.append(rule)
            view = self.views[key] = _View.build(applicable)
        return view


def _compile_when(source: str, seen: dict[str, When | CelError]) -> When:
    """`When.compile`, once per distinct source text in one build."""
    compiled = seen.get(source)
    if compiled is None:
        try:
            compiled = When.compile(source)
        except CelError as error:
            compiled = error
        seen[source] = compiled
    if isinstance(compiled, CelError):
        raise compiled
    return compiled


def _compile_rules(
    policy: AccessPolicy,
    ordinal: int,
    key: str,
    subjects: _Subjects,
    seen: dict[str, When | CelError],
) -> tuple[list[_Rule], list[str]]:
    rules, problems = [], []
    for index, rule in enumerate(policy.spec.rules):
        when, when_error = None, None
        if rule.when is not None:
            try:
                when = _compile_when(rule.when, seen)
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
    Lookup tables per server and per caller are built on first use and cached (bounded); they
    fill idempotently, so one index can be shared by every task and thread.
    """

    def __init__(self, policies: Sequence[_Policy], problems: Sequence[str]) -> None:
        self._by_namespace: dict[str, list[_Policy]] = {}
        for policy in policies:
            self._by_namespace.setdefault(policy.namespace, []).append(policy)
        self.problems: tuple[str, ...] = tuple(problems)
        self._tables: dict[tuple[str, str], _ServerTable] = {}
        self._claim_names = tuple(sorted({name for p in policies for name, _ in p.subjects.claims}))

    @classmethod
    def build(cls, policies: Iterable[AccessPolicy]) -> PolicyIndex:
        """Compile `policies` (namespace and name from their metadata). Never raises for a bad
        `when`: that rule fails closed and the problem is listed in `problems`."""
        keyed = sorted(
            ((p.metadata.namespace or "default", p.metadata.name or "", p) for p in policies),
            key=lambda t: (t[0], t[1]),
        )
        compiled, problems = [], []
        seen: dict[str, When | CelError] = {}
        for ordinal, (namespace, name, policy) in enumerate(keyed):
            key = f"{namespace}/{name}"
            subjects = _Subjects.compile(policy.spec.subjects)
            rules, rule_problems = _compile_rules(policy, ordinal, key, subjects, seen)
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

    def _view(self, caller: Caller, server: ServerRef) -> _View:
        claims = (
            tuple(_claim_key(caller.claims.get(name)) for name in self._claim_names)
            if self._claim_names
            else ()
        )
        key = (caller.username, caller.email, caller.groups, caller.service_account, claims)
        return self._table(server).view(caller, key)

    def decide(self, request: Request) -> Decision:
        """Allow or deny one request, saying which policy and rule decided."""
        return self._view(request.caller, request.server).decide(request, listing=False)

    def for_caller(self, caller: Caller, server: ServerRef) -> CallerDecisions:
        """`decide` for one caller on one server, with the caller's view found once (for a
        process that sees many requests of one caller)."""
        return CallerDecisions(self._view(caller, server), caller, server)

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
        view = self._view(caller, server)
        method = USE_METHOD[kind]
        kept = []
        for item in items:
            request = Request(caller=caller, server=server, method=method, name=key(item))
            if view.decide(request, listing=True).allowed:
                kept.append(item)
        return kept


class CallerDecisions:
    """The decisions of one index for one caller on one server: `PolicyIndex.decide` without
    finding the caller's view again, and without building a `Request` for a decision the view
    has kept."""

    def __init__(self, view: _View, caller: Caller, server: ServerRef) -> None:
        self._view = view
        self._caller = caller
        self._server = server

    def decide(self, method: str, name: str | None, arguments: Mapping[str, Any]) -> Decision:
        decision = self._view.decided.get((method, name))
        if decision is not None:
            return decision
        request = Request(self._caller, self._server, method, name, arguments)
        return self._view.decide(request, listing=False)


def _claim_key(value: Any) -> Hashable:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return None if value is None else str(value)


class _Evaluation:
    """One decision in progress over the caller's view of the server's rules."""

    def __init__(self, request: Request, *, listing: bool) -> None:
        self.request = request
        self.listing = listing
        self.first_error: tuple[_Rule, str] | None = None
        self._activation: dict[str, Any] | None = None

    def run(self, ordered: list[_Rule]) -> Decision | None:
        """The first matching rule's decision; None when none matches (with any CEL error kept
        for the default decision)."""
        for rule in ordered:
            if self._matches(rule):
                if self.first_error is not None and self.first_error[0] is rule:
                    error = self.first_error[1]
                    return rule.decided(
                        f"denied by {rule.label}: its `when` failed ({error}) and a failing "
                        "Deny denies",
                        cel_error=error,
                    )
                return rule.decision
        if self.first_error is None:
            return None
        rule, error = self.first_error
        return Decision(
            allowed=False,
            basis="default",
            reason=(
                f"no policy allows it (default deny); {rule.label} did not match because its "
                f"`when` failed ({error})"
            ),
            cel_error=error,
        )

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
