"""validate_policy: what the API server cannot check (user CEL), for the ConfigValid condition."""

from __future__ import annotations

import pytest

from corral.api.policy import ItemSubset, fold, validate_policy
from tests.api.policy_helpers import allow, make_policy


@pytest.mark.parametrize(
    "when",
    [
        "args.path.startsWith('/tmp')",
        "has(args.path) && size(args.path) < 100",
        "user.groups.exists(g, g == 'admins') && server.name == 'x'",
        "args.items.all(item, item.size() < 10)",
        "method == 'tools/call' && tool.matches('^read_') && resource == '' && prompt == ''",
        "type(args.n) == int && args.n > 3",
    ],
)
def test_valid_when(when: str) -> None:
    assert validate_policy(make_policy(allow(tools=["t"], when=when))) == []


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("args.path.startsWith(", "does not compile"),
        ("usr.name == 'a'", "unknown variable 'usr'"),
        ("request.args.x == 1", "unknown variable 'request'"),
        ("lookup(args.x)", "unknown function 'lookup'"),
    ],
)
def test_invalid_when(when: str, problem: str) -> None:
    problems = validate_policy(make_policy(allow(name="r", tools=["t"], when=when)))
    assert len(problems) == 1
    assert problems[0].startswith("rule 0 (r): when ")
    assert problem in problems[0]


def test_duplicate_rule_names() -> None:
    problems = validate_policy(
        make_policy(allow(name="a", tools=["x"]), allow(name="a", tools=["y"]))
    )
    assert problems == ["rule names must be unique; repeated: a"]


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("Delete_X", "delete_x"),
        ("\uff24\uff25\uff2c", "del"),
        ("a\u200bb", "ab"),
        ("Stra\u00dfe", "strasse"),
        ("\u212bngstr\u00f6m", "\u00e5ngstr\u00f6m"),
    ],
)
def test_fold(name: str, folded: str) -> None:
    assert fold(name) == folded


def test_item_subset_of_a_server() -> None:
    subset = ItemSubset.compile(allow=["git_*"], deny=["git_push*"])
    assert subset.exposes("git_log")
    assert not subset.exposes("GIT_PUSH")
    assert not subset.exposes("Git_log")
    assert not subset.exposes("other")
    everything_but = ItemSubset.compile(allow=None, deny=["printEnv"])
    assert everything_but.exposes("echo")
    assert not everything_but.exposes("PRINTENV")


def test_item_lists_without_a_method_that_names_items() -> None:
    problems = validate_policy(make_policy(allow(methods=["tools/list"], tools=["t"])))
    assert problems == ["rule 0: tools never match: methods name no tools/call"]
