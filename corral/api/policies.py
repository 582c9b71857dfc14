"""AccessPolicy: who may call which servers' tools, resources and prompts.

Rule: this module only describes and validates the resource. What a policy means at request time
lives in `corral.api.policy`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel, count_set
from corral.api.common import DnsSubdomain, Glob, LabelSelector
from corral.api.conditions import ConditionList
from corral.api.meta import ObjectMeta

METHOD_PATTERN = r"^(\*|[a-z][a-zA-Z]*(/[a-z][a-zA-Z]*)+)$"
ITEM_METHOD_PREFIXES = {"tools": "tools/", "resources": "resources/", "prompts": "prompts/"}


class ClaimSubject(CorralModel):
    """Callers whose identity claim `name` has one of `values` (for a list claim: contains one)."""

    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Claim name in the caller's identity (for example `department` or `roles`)."
    )
    values: Annotated[
        list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=64)
    ] = Field(description="Accepted values; the subject matches when the claim equals one of them.")


class Subject(CorralModel):
    """One kind of caller: exactly one of user, group, serviceAccount or claim."""

    user: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description=(
            "A user, matched exactly against the caller's username or email; `*` matches every "
            "authenticated user."
        ),
    )
    group: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="A group the caller belongs to (exact match)."
    )
    service_account: Annotated[str, Field(min_length=1, max_length=317)] | None = Field(
        default=None,
        description="A Kubernetes service account as `namespace/name`, or a Corral agent identity.",
    )
    claim: ClaimSubject | None = Field(
        default=None, description="Callers with a given identity claim value."
    )

    cel_rules = (
        CelRule(
            rule=(
                "(has(self.user) ? 1 : 0) + (has(self.group) ? 1 : 0) + "
                "(has(self.serviceAccount) ? 1 : 0) + (has(self.claim) ? 1 : 0) == 1"
            ),
            message="each subject must set exactly one of user, group, serviceAccount or claim",
            check=lambda s: count_set(s.user, s.group, s.service_account, s.claim) == 1,
        ),
    )


class Targets(CorralModel):
    """Servers in the policy's namespace the policy applies to: the union of all three lists."""

    servers: Annotated[list[DnsSubdomain], Field(max_length=256)] | None = Field(
        default=None, description="MCPServer names; `*` is not special here."
    )
    server_selector: LabelSelector | None = Field(
        default=None, description="MCPServers whose labels match this selector."
    )
    catalog_entries: Annotated[list[DnsSubdomain], Field(max_length=256)] | None = Field(
        default=None, description="MCPServers instantiated from these MCPCatalogEntry names."
    )

    cel_rules = (
        CelRule(
            rule="has(self.servers) || has(self.serverSelector) || has(self.catalogEntries)",
            message="targets must set at least one of servers, serverSelector or catalogEntries",
            check=lambda t: count_set(t.servers, t.server_selector, t.catalog_entries) > 0,
        ),
    )


GlobList = Annotated[list[Glob], Field(min_length=1, max_length=64)]


def _items_need_methods(kind: str) -> CelRule:
    alias = kind
    prefix = ITEM_METHOD_PREFIXES[kind]
    return CelRule(
        rule=(
            f"!has(self.{alias}) || self.methods.exists(m, m == '*' || m.startsWith('{prefix}'))"
        ),
        message=f"{kind} only applies to {prefix}* methods: add one (or '*') to methods",
        check=lambda r: (
            getattr(r, kind) is None or any(m == "*" or m.startswith(prefix) for m in r.methods)
        ),
    )


class PolicyRule(CorralModel):
    """One rule. It matches a request when the method, the named item and `when` all match."""

    name: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="A name reported in decisions and audit events."
    )
    effect: Literal["Allow", "Deny"] = Field(
        description="Allow or Deny. Any matching Deny wins over every Allow."
    )
    methods: Annotated[
        list[Annotated[str, Field(max_length=64, pattern=METHOD_PATTERN)]],
        Field(min_length=1, max_length=32),
    ] = Field(
        default_factory=lambda: ["*"],
        description="MCP methods (`tools/call`, `resources/read`, `prompts/get`, ...) or `*`.",
    )
    tools: GlobList | None = Field(
        default=None,
        description=(
            "Tool-name globs (`*`, `?`). Allow globs match names exactly; Deny globs also match "
            "case- and Unicode-folded (NFKC casefold) names."
        ),
    )
    resources: GlobList | None = Field(default=None, description="Resource-URI globs.")
    prompts: GlobList | None = Field(default=None, description="Prompt-name globs.")
    when: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description=(
            "A CEL condition over `user`, `server`, `method`, `tool`, `resource`, `prompt` and "
            "`args`. An error never allows: an erroring Allow does not match, an erroring Deny "
            "denies."
        ),
    )

    cel_rules = tuple(_items_need_methods(kind) for kind in ITEM_METHOD_PREFIXES)


class AccessPolicySpec(CorralModel):
    """Who (subjects) may do what (rules) on which servers (targets). Default deny."""

    subjects: Annotated[list[Subject], Field(min_length=1, max_length=256)] = Field(
        description="Callers the policy applies to; any one matching is enough."
    )
    targets: Targets = Field(description="Servers in this namespace the policy applies to.")
    rules: Annotated[list[PolicyRule], Field(min_length=1, max_length=64)] = Field(
        description="Rules, evaluated together: a matching Deny wins, else a matching Allow."
    )


class AccessPolicyStatus(CorralModel):
    """What the operator observed about the policy."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    conditions: ConditionList | None = Field(
        default=None, description="ConfigValid tells whether every `when` expression compiles."
    )


class AccessPolicy(CorralModel):
    """An AccessPolicy resource."""

    api_version: Literal["corral.dev/v1alpha1"] = Field(
        default="corral.dev/v1alpha1", description="API version."
    )
    kind: Literal["AccessPolicy"] = Field(default="AccessPolicy", description="Kind.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: AccessPolicySpec = Field(description="The policy.")
    status: AccessPolicyStatus | None = Field(default=None, description="Observed state.")
