"""The shim's authorizer: policy decisions for verified identities."""

from __future__ import annotations

from corral.api.policies import AccessPolicy
from corral.api.policy import ServerRef
from corral.common.assertion import Identity
from corral.mcp.targets import TargetKind
from corral.shim.authorize import MAX_CALLERS, PolicyAuthorizer

POLICY = AccessPolicy.model_validate(
    {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "readers", "namespace": "team"},
        "spec": {
            "subjects": [{"group": "readers"}],
            "targets": {"servers": ["files"]},
            "rules": [{"effect": "Allow", "methods": ["tools/call"], "tools": ["read"]}],
        },
    }
)
ECHO = (TargetKind.TOOL, "read")


def identity(jti: str, *groups: str) -> Identity:
    return Identity("ana", None, groups, None, None, None, jti, 2_000_000_000)


def authorizer() -> PolicyAuthorizer:
    return PolicyAuthorizer([POLICY], ServerRef("team", "files"))


def test_a_caller_kept_for_an_assertion_never_stands_in_for_another_identity() -> None:
    check = authorizer()
    reader = identity("jti-1", "readers")
    assert check.decide(reader, "tools/call", ECHO, {}).allowed
    forged = identity("jti-1", "writers")  # the same jti, other groups: a different identity
    denied = check.decide(forged, "tools/call", ECHO, {})
    assert not denied.allowed
    assert not check.visible(forged, TargetKind.TOOL, "read")
    assert check.decide(reader, "tools/call", ECHO, {}).allowed
    assert check.visible(reader, TargetKind.TOOL, "read")


def test_kept_callers_are_bounded_and_decisions_hold_past_the_bound() -> None:
    check = authorizer()
    for index in range(MAX_CALLERS + 5):
        groups = ("readers",) if index % 2 == 0 else ("writers",)
        verdict = check.decide(identity(f"jti-{index}", *groups), "tools/call", ECHO, {})
        assert verdict.allowed is (index % 2 == 0)
    assert len(check._callers) <= MAX_CALLERS


def test_verdicts_follow_each_decision_of_a_when_over_the_arguments() -> None:
    policy = AccessPolicy.model_validate(
        {
            "metadata": {"name": "paths", "namespace": "team"},
            "spec": {
                "subjects": [{"group": "readers"}],
                "targets": {"servers": ["files"]},
                "rules": [
                    {"effect": "Allow", "methods": ["tools/call"], "tools": ["read"]},
                    {
                        "name": "no-etc",
                        "effect": "Deny",
                        "methods": ["tools/call"],
                        "tools": ["read"],
                        "when": "args.path.startsWith('/etc')",
                    },
                ],
            },
        }
    )
    check = PolicyAuthorizer([policy], ServerRef("team", "files"))
    reader = identity("jti-1", "readers")
    for _ in range(3):
        allowed = check.decide(reader, "tools/call", ECHO, {"path": "/tmp/a"})
        denied = check.decide(reader, "tools/call", ECHO, {"path": "/etc/passwd"})
        assert (allowed.allowed, allowed.rule) == (True, "rules[0]")
        assert (denied.allowed, denied.rule, denied.policy) == (False, "no-etc", "team/paths")
