"""CEL `when` compilation: variables and record fields handed to CEL, errors reported."""

from __future__ import annotations

import pytest

from corral.api.policy import Caller, PolicyIndex, Request
from corral.api.policy.expressions import CelError, When
from tests.api.policy_helpers import SERVER, allow, make_policy

USER = {"name": "alice", "email": "a@x.com", "groups": ["eng"], "claims": {"level": 3}}


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("user.name == 'alice'", {"user": frozenset({"name"})}),
        ("user . email.endsWith('@x') && user.name != ''", {"user": frozenset({"email", "name"})}),
        (
            "has(user.claims.level) && server.name == 'files'",
            {"user": frozenset({"claims"}), "server": frozenset({"name"})},
        ),
        ("user['name'] == 'alice'", {}),
        ("size(user) > 0", {}),
        ("args.role == 'user'", {}),
        ("args.user.name == 'x'", {}),
        ("args.xs.exists(user, user == 'x')", {}),
    ],
)  # fmt: skip
def test_fields_handed_to_cel(source: str, fields: dict[str, frozenset[str]]) -> None:
    assert dict(When.compile(source).fields) == fields


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("user.name == 'alice'", True),
        ("user['email'] == 'a@x.com'", True),
        ("user.claims.level > 2 && 'eng' in user.groups", True),
        ("args.xs.exists(user, user == 'alice')", True),
        ("args.role == 'user' && user.name == 'alice'", True),
    ],
)
def test_projection_keeps_the_meaning(source: str, expected: bool) -> None:
    activation = {"user": USER, "args": {"xs": ["alice"], "role": "user"}}
    assert When.compile(source).evaluate(activation) is expected


def test_non_bool_result_is_an_error() -> None:
    with pytest.raises(CelError, match="not bool"):
        When.compile("args.n + 1").evaluate({"args": {"n": 1}})


def test_when_reads_claims_through_the_index() -> None:
    index = PolicyIndex.build([make_policy(allow(tools=["t"], when="user.claims.level >= 3"))])
    senior = Caller("s", groups=frozenset({"eng"}), claims={"level": 3})
    junior = Caller("j", groups=frozenset({"eng"}), claims={"level": 1})
    assert index.decide(Request(senior, SERVER, "tools/call", "t")).allowed
    assert not index.decide(Request(junior, SERVER, "tools/call", "t")).allowed
