"""Checks on an AccessPolicy the API server cannot make (it cannot compile user CEL).

Rule: pure; returns every problem as a sentence naming the rule, empty when the policy is valid.
The operator reports the result in the ConfigValid condition.
"""

from __future__ import annotations

from corral.api.policies import AccessPolicy
from corral.api.policy.expressions import compile_problems
from corral.api.policy.model import CALL_METHODS


def validate_policy(policy: AccessPolicy) -> list[str]:
    """Problems with `policy` beyond its schema: `when` expressions that do not compile or name
    unknown variables or functions, and rules that can never match."""
    problems: list[str] = []
    for index, rule in enumerate(policy.spec.rules):
        label = f"rule {index}" + (f" ({rule.name})" if rule.name else "")
        if rule.when is not None:
            problems.extend(f"{label}: when {p}" for p in compile_problems(rule.when))
        for field_name, kind in (
            ("tools", "tool"),
            ("resources", "resource"),
            ("prompts", "prompt"),
        ):
            uses = {m for m, k in CALL_METHODS.items() if k == kind}
            if getattr(rule, field_name) is not None and not (
                "*" in rule.methods or uses.intersection(rule.methods)
            ):
                problems.append(
                    f"{label}: {field_name} never match: methods name no "
                    f"{' or '.join(sorted(uses))}"
                )
    names = [r.name for r in policy.spec.rules if r.name]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"rule names must be unique; repeated: {', '.join(duplicates)}")
    return problems
