"""Properties over random policies: deny always wins, lists never show what a call denies, and
the compiled index agrees with a plain scan of every rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, GlobSet, PolicyIndex, Request, ServerRef
from tests.api.policy_helpers import make_policy

NAME_CHARS = "abAB_\uff41\u200b"
GLOB_CHARS = "abAB_*?"
CALLERS = [
    Caller("alice", groups=frozenset({"eng"})),
    Caller("bob", groups=frozenset({"sales"})),
    Caller("carol", groups=frozenset({"eng", "sales"})),
]
SERVERS = [ServerRef("team", "files"), ServerRef("team", "other")]

names = st.text(NAME_CHARS, min_size=0, max_size=4)
globs = st.text(GLOB_CHARS, min_size=1, max_size=4)
rules = st.fixed_dictionaries(
    {
        "effect": st.sampled_from(["Allow", "Deny"]),
        "methods": st.sampled_from([["tools/call"], ["*"], ["prompts/get"]]),
    },
    optional={
        "tools": st.lists(globs, min_size=1, max_size=3),
        "when": st.sampled_from(["user.name == 'alice'", "user.nme == 1", "true"]),
    },
).filter(lambda r: "tools" not in r or r["methods"] != ["prompts/get"])
policies = st.lists(
    st.builds(
        lambda i, rs, subject, servers: make_policy(
            *rs, name=f"p{i}", subjects=[subject], targets={"servers": servers}
        ),
        st.integers(0, 50),
        st.lists(rules, min_size=1, max_size=4),
        st.sampled_from([{"user": "alice"}, {"group": "eng"}, {"group": "sales"}, {"user": "*"}]),
        st.sampled_from([["files"], ["other"], ["files", "other"]]),
    ),
    max_size=6,
    unique_by=lambda p: p.metadata.name,
)


def _naive(policies: list[AccessPolicy], request: Request) -> bool | None:
    """Allowed or not for a tools/call by scanning every rule; None when no rule decides."""
    allowed = False
    for policy in policies:
        spec = policy.spec
        caller = request.caller
        subject_ok = any(
            s.user in ("*", caller.username) or (s.group is not None and s.group in caller.groups)
            for s in spec.subjects
        )
        if not subject_ok or request.server.name not in (spec.targets.servers or ()):
            continue
        for rule in spec.rules:
            if "*" not in rule.methods and request.method not in rule.methods:
                continue
            deny = rule.effect == "Deny"
            if rule.tools is not None:
                globs = GlobSet.compile(rule.tools, for_deny=deny)
                if not globs.matches(request.name or ""):
                    continue
            if rule.when is not None:
                holds = rule.when == "true" or (
                    rule.when == "user.name == 'alice'" and caller.username == "alice"
                )
                if rule.when == "user.nme == 1":
                    holds = deny
                if not holds:
                    continue
            if deny:
                return False
            allowed = True
    return allowed


@settings(max_examples=150, deadline=None)
@given(policies, names, st.sampled_from(CALLERS), st.sampled_from(SERVERS))
def test_index_agrees_with_a_plain_scan(
    policies: list[AccessPolicy], name: str, caller: Caller, server: ServerRef
) -> None:
    request = Request(caller, server, "tools/call", name)
    assert PolicyIndex.build(policies).decide(request).allowed == _naive(policies, request)


@settings(max_examples=100, deadline=None)
@given(policies, names, st.sampled_from(CALLERS), st.lists(globs, min_size=1, max_size=2))
def test_a_matching_deny_always_wins(
    policies: list[AccessPolicy], name: str, caller: Caller, extra_allow: list[str]
) -> None:
    server = SERVERS[0]
    deny_all_of_name: dict[str, Any] = {
        "effect": "Deny",
        "methods": ["tools/call"],
        "tools": ["".join(c if c in "abAB_" else "?" for c in name) or "*"],
    }
    extra = make_policy(
        {"effect": "Allow", "methods": ["*"]},
        {"effect": "Allow", "methods": ["tools/call"], "tools": [*extra_allow, "*"]},
        deny_all_of_name,
        name="zz-deny",
        subjects=[{"user": "*"}],
    )
    decision = PolicyIndex.build([*policies, extra]).decide(
        Request(caller, server, "tools/call", name)
    )
    assert not decision.allowed
    assert decision.basis == "rule"


@settings(max_examples=100, deadline=None)
@given(policies, st.lists(names, max_size=8), st.sampled_from(CALLERS), st.sampled_from(SERVERS))
def test_list_never_shows_what_a_call_denies(
    policies: list[AccessPolicy], listed: list[str], caller: Caller, server: ServerRef
) -> None:
    index = PolicyIndex.build(policies)
    shown = index.filter_list(caller, server, "tool", listed, key=str)
    for name in listed:
        callable_ = index.decide(Request(caller, server, "tools/call", name)).allowed
        assert (name in shown) == callable_, name
