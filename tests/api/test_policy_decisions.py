"""Policy semantics, rule by rule: subjects, targets, methods, items, folding, CEL, ties."""

from __future__ import annotations

from typing import Any

import pytest

from corral.api.policy import Caller, PolicyIndex, Request, ServerRef
from corral.api.policy.index import _DECIDED_MAX
from tests.api.policy_helpers import ALICE, BOB, SERVER, allow, call, deny, make_policy


def test_default_deny_without_policies() -> None:
    decision = PolicyIndex.build([]).decide(Request(ALICE, SERVER, "tools/call", "read"))
    assert not decision.allowed
    assert decision.basis == "default"
    assert decision.policy is None
    assert "no policy allows" in decision.reason


def test_allow_names_policy_and_rule() -> None:
    index = PolicyIndex.build([make_policy(allow(name="reads", tools=["read_*"]), name="eng")])
    decision = index.decide(Request(ALICE, SERVER, "tools/call", "read_file"))
    assert decision.allowed
    assert (decision.policy, decision.rule_index, decision.rule_name) == ("team/eng", 0, "reads")


def test_deny_overrides_allow_in_another_policy() -> None:
    index = PolicyIndex.build(
        [
            make_policy(allow(tools=["*"]), name="a-allow"),
            make_policy(deny(name="no-rm", tools=["rm"]), name="z-deny"),
        ]
    )
    decision = index.decide(Request(ALICE, SERVER, "tools/call", "rm"))
    assert not decision.allowed
    assert (decision.policy, decision.rule_name) == ("team/z-deny", "no-rm")
    assert call(index, "ls")


def test_first_policy_and_rule_decide_ties() -> None:
    index = PolicyIndex.build(
        [
            make_policy(allow(tools=["x"]), allow(tools=["*"]), name="b"),
            make_policy(allow(tools=["x*"]), name="a"),
        ]
    )
    decision = index.decide(Request(ALICE, SERVER, "tools/call", "x"))
    assert (decision.policy, decision.rule_index) == ("team/a", 0)


@pytest.mark.parametrize(
    ("subject", "caller", "allowed"),
    [
        ({"user": "alice"}, ALICE, True),
        ({"user": "alice@example.com"}, ALICE, True),
        ({"user": "Alice"}, ALICE, False),
        ({"user": "ALICE@Example.com"}, ALICE, True),
        ({"user": "alice@example.org"}, ALICE, False),
        ({"user": "*"}, BOB, True),
        ({"group": "eng"}, ALICE, True),
        ({"group": "eng"}, BOB, False),
        ({"group": "ENG"}, ALICE, False),
        ({"serviceAccount": "agents/bot"}, Caller("x", service_account="agents/bot"), True),
        ({"serviceAccount": "agents/bot"}, Caller("agents/bot"), False),
        ({"claim": {"name": "dept", "values": ["r&d"]}}, Caller("x", claims={"dept": "r&d"}), True),
        (
            {"claim": {"name": "dept", "values": ["r&d"]}},
            Caller("x", claims={"dept": "ops"}),
            False,
        ),
        (
            {"claim": {"name": "roles", "values": ["a"]}},
            Caller("x", claims={"roles": ["b", "a"]}),
            True,
        ),
        ({"claim": {"name": "roles", "values": ["a"]}}, Caller("x", claims={}), False),
        (
            {"claim": {"name": "admin", "values": ["true"]}},
            Caller("x", claims={"admin": True}),
            True,
        ),
    ],
)
def test_subjects(subject: dict[str, Any], caller: Caller, allowed: bool) -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"]), subjects=[subject])])
    assert call(index, "t", caller=caller) is allowed


@pytest.mark.parametrize(
    ("targets", "server", "allowed"),
    [
        ({"servers": ["files"]}, SERVER, True),
        ({"servers": ["other"]}, SERVER, False),
        ({"servers": ["files"]}, ServerRef("elsewhere", "files"), False),
        ({"serverSelector": {"matchLabels": {"tier": "sandbox"}}}, SERVER, True),
        ({"serverSelector": {"matchLabels": {"tier": "prod"}}}, SERVER, False),
        ({"serverSelector": {}}, SERVER, True),
        (
            {
                "serverSelector": {
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["prod"]}]
                }
            },
            SERVER,
            True,
        ),
        (
            {"serverSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}},
            SERVER,
            False,
        ),
        ({"catalogEntries": ["github"]}, ServerRef("team", "gh", catalog_entry="github"), True),
        ({"catalogEntries": ["github"]}, SERVER, False),
    ],
)
def test_targets(targets: dict[str, Any], server: ServerRef, allowed: bool) -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"]), targets=targets)])
    assert call(index, "t", server=server) is allowed


def test_label_change_is_seen_by_the_index() -> None:
    index = PolicyIndex.build(
        [make_policy(allow(tools=["t"]), targets={"serverSelector": {"matchLabels": {"a": "1"}}})]
    )
    assert call(index, "t", server=ServerRef("team", "s", labels={"a": "1"}))
    assert not call(index, "t", server=ServerRef("team", "s", labels={"a": "2"}))


@pytest.mark.parametrize(
    ("methods", "method", "name", "allowed"),
    [
        (["tools/call"], "tools/call", "t", True),
        (["tools/call"], "prompts/get", "t", False),
        (["*"], "prompts/get", "t", True),
        (["*"], "sampling/createMessage", None, True),
        (["resources/read"], "resources/read", "file:///a", True),
        (["resources/read"], "resources/subscribe", "file:///a", False),
    ],
)
def test_methods_without_item_lists(
    methods: list[str], method: str, name: str | None, allowed: bool
) -> None:
    index = PolicyIndex.build([make_policy({"effect": "Allow", "methods": methods})])
    assert index.decide(Request(ALICE, SERVER, method, name)).allowed is allowed


def test_item_lists_limit_a_rule_to_their_kinds() -> None:
    index = PolicyIndex.build([make_policy({"effect": "Allow", "methods": ["*"], "tools": ["t*"]})])
    assert call(index, "tea")
    assert not index.decide(Request(ALICE, SERVER, "prompts/get", "tea")).allowed
    assert not index.decide(Request(ALICE, SERVER, "resources/read", "tea")).allowed


def test_item_deny_does_not_deny_session_methods() -> None:
    index = PolicyIndex.build(
        [make_policy({"effect": "Allow", "methods": ["*"]}, deny(methods=["*"], tools=["*"]))]
    )
    assert index.decide(Request(ALICE, SERVER, "initialize")).allowed
    assert not call(index, "anything")


def test_session_methods_need_an_allow_rule_for_the_caller() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"]))])
    for method in ("initialize", "ping", "tools/list", "server/discover"):
        decision = index.decide(Request(ALICE, SERVER, method))
        assert decision.allowed
        assert decision.basis == "session"
        assert decision.policy == "team/p"
        assert not index.decide(Request(BOB, SERVER, method)).allowed
    assert not index.decide(Request(ALICE, SERVER, "sampling/createMessage")).allowed
    assert index.may_access(ALICE, SERVER).allowed
    assert not index.may_access(BOB, SERVER).allowed


def test_unconditional_deny_on_all_methods_closes_the_server() -> None:
    index = PolicyIndex.build(
        [make_policy({"effect": "Allow", "methods": ["*"]}, {"effect": "Deny", "methods": ["*"]})]
    )
    assert not index.decide(Request(ALICE, SERVER, "initialize")).allowed
    assert not index.may_access(ALICE, SERVER).allowed


@pytest.mark.parametrize(
    ("pattern", "name", "allowed"),
    [
        ("read_*", "read_file", True),
        ("read_*", "read_", True),
        ("read_*", "read", False),
        ("read_*", "xread_file", False),
        ("read_?", "read_a", True),
        ("read_?", "read_ab", False),
        ("read_?", "read_", False),
        ("*", "", True),
        ("*", "anything/at all", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a.b", "a.b", True),
        ("a.b", "aXb", False),
        ("file:///docs/*", "file:///docs/x/y.md", True),
        ("read_file", "Read_file", False),
        ("read_file", "READ_FILE", False),
        ("read_file", "\uff52ead_file", False),
        ("read_file", "read_file\u200b", False),
        ("caf\u00e9", "cafe\u0301", False),
    ],
)
def test_allow_globs_match_exactly(pattern: str, name: str, allowed: bool) -> None:
    index = PolicyIndex.build([make_policy(allow(tools=[pattern]))])
    assert call(index, name) is allowed


@pytest.mark.parametrize(
    "name",
    [
        "delete_x",
        "DELETE_x",
        "Delete_X",
        "\uff44\uff45\uff4c\uff45\uff54\uff45_x",
        "dele\u200bte_x",
        "\u00addelete_x",
        "delete\ufe4dx",
    ],
)
def test_deny_glob_catches_case_and_unicode_variants(name: str) -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["*"]), deny(tools=["delete_*"]))])
    assert not call(index, name)


@pytest.mark.parametrize(
    "name", ["rm", "RM", "Rm", "\uff52\uff4d", "r\u200dm", "\u24c7\u24dc".lower()]
)
def test_deny_literal_catches_case_and_unicode_variants(name: str) -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["*"]), deny(tools=["rm"]))])
    decision = index.decide(Request(ALICE, SERVER, "tools/call", name))
    assert not decision.allowed
    assert decision.basis == "rule"


def test_folding_a_deny_glob_never_creates_wildcards() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["*"]), deny(tools=["a\uff0ab"]))])
    assert not call(index, "a*b")
    assert call(index, "aXb")


def test_cel_when_over_args_user_server_method_tool() -> None:
    when = (
        "args.path.startsWith('/tmp/') && user.email.endsWith('@example.com') && "
        "server.labels.tier == 'sandbox' && method == 'tools/call' && tool == 'write'"
    )
    index = PolicyIndex.build([make_policy(allow(tools=["write"], when=when))])
    assert call(index, "write", {"path": "/tmp/x"})
    assert not call(index, "write", {"path": "/etc/x"})
    assert not call(
        index, "write", {"path": "/tmp/x"}, caller=Caller("a", groups=frozenset({"eng"}))
    )


def test_allow_whose_when_errors_does_not_match() -> None:
    index = PolicyIndex.build(
        [make_policy(allow(tools=["w"], when="args.path.startsWith('/tmp')"))]
    )
    decision = index.decide(Request(ALICE, SERVER, "tools/call", "w", {}))
    assert not decision.allowed
    assert decision.basis == "default"
    assert decision.cel_error is not None
    assert "when` failed" in decision.reason


def test_deny_whose_when_errors_denies() -> None:
    index = PolicyIndex.build(
        [make_policy(allow(tools=["*"]), deny(tools=["w"], when="args.path.startsWith('/etc')"))]
    )
    decision = index.decide(Request(ALICE, SERVER, "tools/call", "w", {"other": 1}))
    assert not decision.allowed
    assert decision.basis == "rule"
    assert decision.cel_error is not None
    assert "a failing Deny denies" in decision.reason
    assert call(index, "w", {"path": "/tmp/x"})


@pytest.mark.parametrize(
    "when",
    [
        "args.n / 0 == 1",
        "args.n + 'x' == 'x'",
        "args.n",
        "args.missing.deeper == 1",
        "nosuchvariable == 1",
        "size(",
        "custom_function(1)",
    ],
)
def test_cel_errors_never_allow(when: str) -> None:
    allowing = PolicyIndex.build([make_policy(allow(tools=["t"], when=when))])
    assert not call(allowing, "t", {"n": 1})
    denying = PolicyIndex.build([make_policy(allow(tools=["t"]), deny(tools=["t"], when=when))])
    assert not call(denying, "t", {"n": 1})


def test_bad_when_is_reported_by_the_index() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"], when="size("))])
    assert len(index.problems) == 1
    assert "team/p rule 0" in index.problems[0]


def test_when_can_guard_missing_arguments() -> None:
    when = "!has(args.path) || !args.path.startsWith('/etc')"
    index = PolicyIndex.build([make_policy(allow(tools=["t"], when=when))])
    assert call(index, "t", {})
    assert call(index, "t", {"path": "/tmp"})
    assert not call(index, "t", {"path": "/etc/shadow"})


def test_policies_only_target_servers_in_their_namespace() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"]), namespace="other")])
    assert not call(index, "t")
    assert call(index, "t", server=ServerRef("other", "files"))


def test_filter_list_keeps_only_usable_items() -> None:
    index = PolicyIndex.build(
        [
            make_policy(
                allow(tools=["read_*", "write"]),
                deny(tools=["read_secret*"]),
                allow(methods=["resources/read"], resources=["file:///pub/*"]),
            )
        ]
    )
    tools = [{"name": n} for n in ("read_a", "READ_b", "read_secrets", "write", "delete")]
    kept = index.filter_list(ALICE, SERVER, "tool", tools, key=lambda t: t["name"])
    assert [t["name"] for t in kept] == ["read_a", "write"]
    uris = ["file:///pub/a", "file:///priv/b"]
    assert index.filter_list(ALICE, SERVER, "resource", uris, key=str) == ["file:///pub/a"]
    assert index.filter_list(BOB, SERVER, "tool", tools, key=lambda t: t["name"]) == []


def test_filter_list_with_argument_conditions() -> None:
    index = PolicyIndex.build(
        [
            make_policy(
                allow(tools=["write"], when="args.path.startsWith('/tmp')"),
                allow(tools=["ls"]),
                deny(tools=["ls"], when="args.recursive == true"),
                allow(tools=["admin"], when="'admins' in user.groups"),
                deny(tools=["ls", "write"], when="user.name == 'mallory'"),
            )
        ]
    )
    names = ["write", "ls", "admin"]
    assert index.filter_list(ALICE, SERVER, "tool", names, key=str) == ["write", "ls"]
    mallory = Caller("mallory", groups=frozenset({"eng", "admins"}))
    assert index.filter_list(mallory, SERVER, "tool", names, key=str) == ["admin"]


def test_kept_decisions_never_stand_in_for_a_when_over_the_arguments() -> None:
    index = PolicyIndex.build(
        [
            make_policy(
                allow(tools=["*"]),
                deny(tools=["write"], when="args.path.startsWith('/etc')"),
                allow(tools=["read"], when="args.path.startsWith('/tmp')", name="tmp"),
            )
        ]
    )
    for _ in range(3):  # the same view asked again and again, in both orders
        assert call(index, "write", {"path": "/tmp/x"})
        assert not call(index, "write", {"path": "/etc/passwd"})
        assert call(index, "read", {"path": "/etc/passwd"})  # the plain Allow still holds
        assert call(index, "list")
    only_when = PolicyIndex.build([make_policy(allow(tools=["read"], when="args.n > 1"))])
    for _ in range(3):
        assert not call(only_when, "read", {"n": 1})
        assert call(only_when, "read", {"n": 2})


def test_kept_decisions_are_per_caller_and_bounded() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t*"]))])
    for number in range(1500):  # more names than a view keeps
        assert call(index, f"t{number}")
        assert not call(index, f"t{number}", caller=BOB)
        assert not call(index, f"x{number}")
    views = [view for table in index._tables.values() for view in table.views.values()]
    assert len(views) == 2  # one per caller
    assert all(0 < len(view.decided) <= _DECIDED_MAX for view in views)


def test_decisions_for_one_caller_are_the_index_decisions() -> None:
    index = PolicyIndex.build(
        [
            make_policy(
                allow(tools=["*"]),
                deny(tools=["write"], when="args.path.startsWith('/etc')"),
                allow(tools=["read"], when="args.path.startsWith('/tmp')", name="tmp"),
                allow(methods=["resources/read"], resources=["file:///pub/*"]),
            )
        ]
    )
    asked = [
        ("tools/call", "write", {"path": "/tmp/x"}),
        ("tools/call", "write", {"path": "/etc/passwd"}),
        ("tools/call", "read", {"path": "/etc/passwd"}),
        ("tools/call", "list", {}),
        ("resources/read", "file:///pub/a", {}),
        ("resources/read", "file:///etc/shadow", {}),
        ("initialize", None, {}),
    ]
    for caller in (ALICE, BOB):
        decisions = index.for_caller(caller, SERVER)
        for method, name, args in asked + asked[::-1] + asked:  # kept ones asked again
            expected = index.decide(Request(caller, SERVER, method, name, args))
            assert decisions.decide(method, name, args) == expected, (caller, method, name, args)
