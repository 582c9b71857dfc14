"""The static directory's early policy check: decisions are remembered per caller and server,
and never outlive the policies, the server entry or the claims they were made for."""

from __future__ import annotations

from typing import Any

from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, PolicyIndex
from corral.gateway.directory import ServerEntry, StaticDirectory

NAMESPACE = "tools"


def policy(name: str, subject: dict[str, Any], targets: dict[str, Any]) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "subjects": [subject],
                "targets": targets,
                "rules": [{"effect": "Allow", "methods": ["*"]}],
            },
        }
    )


def server(**labels: str) -> ServerEntry:
    return ServerEntry(NAMESPACE, "weather", "http://127.0.0.1:9/mcp", labels=labels)


def allowed(directory: StaticDirectory, caller: Caller, entry: ServerEntry) -> bool:
    decision = directory.may_access(caller, entry)
    assert decision is not None
    return decision.allowed


def test_a_remembered_decision_is_the_same_decision() -> None:
    entry = server()
    directory = StaticDirectory(
        [entry], PolicyIndex.build([policy("dev", {"group": "dev"}, {"servers": ["weather"]})])
    )
    dev, ops = Caller("ada", groups=frozenset({"dev"})), Caller("bob", groups=frozenset({"ops"}))
    first = directory.may_access(dev, entry)
    assert first is not None
    assert first.allowed
    assert directory.may_access(dev, entry) is first
    assert not allowed(directory, ops, entry)
    assert allowed(directory, Caller("ada", groups=frozenset({"dev"})), entry)
    assert not allowed(directory, Caller("ada", groups=frozenset({"ops"})), entry)


def test_a_policy_change_is_seen_on_the_next_decision() -> None:
    entry = server()
    caller = Caller("ada", groups=frozenset({"dev"}))
    before = StaticDirectory(
        [entry], PolicyIndex.build([policy("dev", {"group": "dev"}, {"servers": ["weather"]})])
    )
    assert allowed(before, caller, entry)
    after = StaticDirectory(
        [entry], PolicyIndex.build([policy("dev", {"group": "dev"}, {"servers": ["billing"]})])
    )
    assert not allowed(after, caller, entry)
    assert allowed(before, caller, entry)


def test_a_server_whose_labels_changed_is_decided_again() -> None:
    selected = policy(
        "team-a", {"group": "dev"}, {"serverSelector": {"matchLabels": {"team": "a"}}}
    )
    directory = StaticDirectory([server(team="a")], PolicyIndex.build([selected]))
    caller = Caller("ada", groups=frozenset({"dev"}))
    assert allowed(directory, caller, server(team="a"))
    relabelled = server(team="b")
    assert relabelled == server(team="a")
    assert not allowed(directory, caller, relabelled)


def test_callers_with_claims_are_decided_on_their_claims() -> None:
    by_claim = policy(
        "contractors", {"claim": {"name": "org", "values": ["acme"]}}, {"servers": ["weather"]}
    )
    entry = server()
    directory = StaticDirectory([entry], PolicyIndex.build([by_claim]))
    acme = Caller("ada", claims={"org": "acme"})
    other = Caller("ada", claims={"org": "globex"})
    assert acme == other
    assert allowed(directory, acme, entry)
    assert not allowed(directory, other, entry)
    assert allowed(directory, acme, entry)


def test_without_policies_the_directory_decides_nothing() -> None:
    entry = server()
    assert StaticDirectory([entry]).may_access(Caller("ada"), entry) is None
