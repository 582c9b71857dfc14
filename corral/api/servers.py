"""MCPServer: one MCP server, hosted in the cluster or reached by URL.

Rule: this module describes and validates the resource; what the operator builds from it lives
in `corral.operator`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel, count_set
from corral.api.common import (
    DnsSubdomain,
    Duration,
    EnvVar,
    FileSpec,
    Glob,
    KeyRef,
    LocalObjectReference,
    ShortText,
)
from corral.api.conditions import ConditionList
from corral.api.meta import ObjectMeta
from corral.api.runtimes import HTTPS_OR_CLUSTER, Runtime, Url, https_or_cluster

_QUANTITY_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = (
    rf"^(\+|-)?{_QUANTITY_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_QUANTITY_NUMBER}))?$"
)
Quantity = Annotated[int | str, Field(json_schema_extra={"pattern": QUANTITY_PATTERN})]
GlobList = Annotated[list[Glob], Field(min_length=1, max_length=256)]
EgressRule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$|^[0-9a-fA-F:.]+/[0-9]{1,3}$",
    ),
]
JsonPath = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^\$(\.[A-Za-z0-9_*-]+|\[([0-9]+|\*)\])*$")
]


ENV_LIST = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
FILES_LIST = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"]}


class ConfigValue(CorralModel):
    """A value for one of the catalog entry's `config` items."""

    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="The config item's name in the catalog entry."
    )
    value: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="A literal value."
    )
    secret_key_ref: KeyRef | None = Field(default=None, description="Take the value from a Secret.")

    cel_rules = (
        CelRule(
            rule="has(self.value) != has(self.secretKeyRef)",
            message="catalogEntry config entries must set exactly one of value or secretKeyRef",
            check=lambda c: count_set(c.value, c.secret_key_ref) == 1,
        ),
    )


class CatalogEntryRef(CorralModel):
    """An MCPCatalogEntry in the same namespace to instantiate, with values for its config."""

    name: DnsSubdomain = Field(description="Name of the MCPCatalogEntry.")
    config: (
        Annotated[list[ConfigValue], Field(max_length=64, json_schema_extra=ENV_LIST)] | None
    ) = Field(default=None, description="Values for the entry's config items.")


class ResourceRequirements(CorralModel):
    """CPU and memory for the server container (Kubernetes quantities)."""

    limits: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Upper bounds, for example `cpu: 500m`, `memory: 256Mi`."
    )
    requests: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Reserved amounts."
    )


class ToolSubset(CorralModel):
    """The tools the server exposes: names matching `allow` (all if unset) and not `deny`."""

    allow: GlobList | None = Field(default=None, description="Globs of tools to expose.")
    deny: GlobList | None = Field(
        default=None, description="Globs of tools to hide (case- and Unicode-folded match)."
    )


class TokenInjection(CorralModel):
    """How the downstream token reaches the server."""

    header: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        default="Authorization", description="Request header carrying the token."
    )
    prefix: Annotated[str, Field(max_length=64)] = Field(
        default="Bearer ", description="Text put before the token."
    )


class TokenExchange(CorralModel):
    """RFC 8693 token exchange: trade the caller's identity for a token the server accepts."""

    token_endpoint: Url = Field(description="The authorization server's token endpoint (https).")
    client_secret_ref: LocalObjectReference = Field(
        description="Secret with keys `clientId` and `clientSecret` (mounted into the shim only)."
    )
    audience: ShortText | None = Field(default=None, description="Requested audience.")
    resource: ShortText | None = Field(default=None, description="Requested resource (RFC 8707).")
    scopes: Annotated[list[ShortText], Field(max_length=64)] | None = Field(
        default=None, description="Requested scopes."
    )
    inject: TokenInjection = Field(
        default_factory=TokenInjection,
        description="Where the obtained token goes.",
        json_schema_extra={"default": {}},
    )

    cel_rules = (
        CelRule(
            rule="self.tokenEndpoint.startsWith('https://')",
            message="tokenExchange tokenEndpoint must use https",
            check=lambda t: t.token_endpoint.startswith("https://"),
        ),
    )


class Filter(CorralModel):
    """An external filter service called on requests and/or responses."""

    name: Annotated[
        str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ] = Field(description="Filter name, unique in the server.")
    url: Url = Field(description="Filter endpoint: https, or http with inCluster: true.")
    in_cluster: bool = Field(
        default=False, description="The URL is a cluster-internal Service: plain http is allowed."
    )
    secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret with key `hmacKey` used to sign filter calls."
    )
    phase: Literal["request", "response", "both"] = Field(
        default="request", description="When the filter runs."
    )
    methods: Annotated[
        list[Annotated[str, Field(max_length=64)]], Field(min_length=1, max_length=32)
    ] = Field(default_factory=lambda: ["tools/call"], description="MCP methods filtered, or `*`.")
    tools: GlobList | None = Field(default=None, description="Only calls of tools matching these.")
    mutate: bool = Field(default=False, description="The filter may rewrite the message.")
    failure_policy: Literal["Fail", "Ignore"] = Field(
        default="Fail", description="What happens when the filter errs or times out."
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=30)] = Field(
        default=5, description="Time allowed for one filter call."
    )

    cel_rules = (
        CelRule(
            rule=HTTPS_OR_CLUSTER,
            message="filter url must use https (plain http only with inCluster: true)",
            check=lambda f: https_or_cluster(f.url, f.in_cluster),
        ),
    )


class Audit(CorralModel):
    """What audit events record."""

    payloads: Literal["none", "metadata", "full"] = Field(
        default="metadata", description="none, metadata (names, sizes, outcome) or full bodies."
    )
    redact: Annotated[list[JsonPath], Field(max_length=64)] | None = Field(
        default=None, description="JSON paths (`$.params.arguments.password`) blanked in payloads."
    )


class Egress(CorralModel):
    """Outbound destinations the server pod may reach (default: none but the shim)."""

    allow: Annotated[list[EgressRule], Field(max_length=128)] | None = Field(
        default=None, description="Hostnames (`api.example.com`, `*.example.com`), or CIDRs."
    )


def _remote(spec: MCPServerSpec) -> bool:
    return spec.runtime is not None and spec.runtime.remote is not None


class MCPServerSpec(CorralModel):
    """The desired server. Set exactly one of catalogEntry or runtime."""

    catalog_entry: CatalogEntryRef | None = Field(
        default=None, description="Instantiate this MCPCatalogEntry with its defaults."
    )
    runtime: Runtime | None = Field(default=None, description="How the server runs.")
    env: Annotated[list[EnvVar], Field(max_length=128, json_schema_extra=ENV_LIST)] | None = Field(
        default=None, description="Environment of the server container only (never the shim)."
    )
    files: Annotated[list[FileSpec], Field(max_length=64, json_schema_extra=FILES_LIST)] | None = (
        Field(default=None, description="Files mounted into the server container only.")
    )
    tenancy: Literal["shared", "perUser"] | None = Field(
        default=None,
        description=(
            "shared: one Deployment serves every allowed user. perUser: the gateway creates one "
            "MCPServerInstance per user on first use and the operator runs it for that user alone. "
            "Unset: the catalog entry's default, else shared."
        ),
    )
    replicas: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="Replicas of a shared server (default 1). Not for perUser."
    )
    idle_timeout: Duration | None = Field(
        default=None,
        description=(
            "Scale to zero (shared) or delete the instance (perUser) after this long without "
            "calls; seconds or `15m`; 0 disables."
        ),
    )
    startup_timeout: Duration | None = Field(
        default=None,
        description=(
            "How long the gateway waits for a starting server. Unset: the catalog entry's "
            "default, else 120s."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory of the server container."
    )
    node_selector: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)] | None
    ) = Field(default=None, description="Node labels the pod requires.")
    tolerations: Annotated[list[dict[str, Any]], Field(max_length=32)] | None = Field(
        default=None, description="Pod tolerations (Kubernetes Toleration objects)."
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="Pod affinity (a Kubernetes Affinity object)."
    )
    runtime_class_name: DnsSubdomain | None = Field(
        default=None, description="RuntimeClass of the pod, for example gVisor."
    )
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] | None = Field(
        default=None, description="Secrets for pulling the server image."
    )
    tools: ToolSubset | None = Field(default=None, description="The subset of tools exposed.")
    token_exchange: TokenExchange | None = Field(
        default=None, description="Obtain a downstream token per user (RFC 8693)."
    )
    filters: Annotated[list[Filter], Field(max_length=16, json_schema_extra=ENV_LIST)] | None = (
        Field(default=None, description="External filters, run in order.")
    )
    audit: Audit | None = Field(
        default=None,
        description="What audit events record. Unset: the catalog entry's default, else metadata.",
    )
    egress: Egress | None = Field(default=None, description="Allowed outbound destinations.")

    cel_rules = (
        CelRule(
            rule="has(self.catalogEntry) != has(self.runtime)",
            message="set exactly one of catalogEntry or runtime",
            check=lambda s: count_set(s.catalog_entry, s.runtime) == 1,
        ),
        CelRule(
            rule="!has(self.replicas) || !has(self.tenancy) || self.tenancy == 'shared'",
            message="replicas applies only to tenancy shared (perUser runs one instance per user)",
            check=lambda s: s.replicas is None or s.tenancy in (None, "shared"),
        ),
        CelRule(
            rule=(
                "!has(self.runtime) || !has(self.runtime.remote) || "
                "(!has(self.env) && !has(self.files))"
            ),
            message="a remote server has no container: env and files do not apply",
            check=lambda s: not _remote(s) or (s.env is None and s.files is None),
        ),
        CelRule(
            rule=(
                "!has(self.runtime) || !has(self.runtime.remote) || !has(self.tenancy) || "
                "self.tenancy == 'shared'"
            ),
            message="a remote server has no pods to run per user: use tenancy shared",
            check=lambda s: not _remote(s) or s.tenancy in (None, "shared"),
        ),
    )


class MCPServerStatus(CorralModel):
    """What the operator and gateway observed."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    conditions: ConditionList | None = Field(
        default=None, description="Ready, Available, Progressing, Degraded and ConfigValid."
    )
    endpoint: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="In-cluster address of the shim."
    )
    url: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="The gateway URL clients use."
    )
    tenancy: Literal["shared", "perUser"] | None = Field(
        default=None, description="The tenancy in effect (from the spec or the catalog entry)."
    )
    ready_replicas: int | None = Field(default=None, description="Replicas ready to serve.")
    tools: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=4096)] | None = (
        Field(default=None, description="Tool names found at the last probe.")
    )
    tool_count: int | None = Field(default=None, description="How many tools the last probe found.")
    instances: int | None = Field(default=None, description="Per-user instances running.")
    last_activity: datetime | None = Field(default=None, description="Time of the last call.")


def server_name_ok(name: str | None) -> bool:
    """Whether `name` can name the Deployment and Service built for a server (DNS-1035 label,
    at most 50 characters to leave room for suffixes). None means not yet known."""
    return name is None or (len(name) <= SERVER_NAME_MAX and _DNS_1035.fullmatch(name) is not None)


SERVER_NAME_MAX = 50
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
SERVER_NAME_RULE = CelRule(
    rule=(
        f"self.metadata.name.size() <= {SERVER_NAME_MAX} && "
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ),
    message=(
        f"name must start with a letter, use only lower case letters, digits and '-', and be at "
        f"most {SERVER_NAME_MAX} characters (it names a Service)"
    ),
    check=lambda m: server_name_ok(m.metadata.name),
)


class MCPServer(CorralModel):
    """An MCPServer resource."""

    cel_rules = (SERVER_NAME_RULE,)

    api_version: Literal["corral.dev/v1alpha1"] = Field(
        default="corral.dev/v1alpha1", description="API version."
    )
    kind: Literal["MCPServer"] = Field(default="MCPServer", description="Kind.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: MCPServerSpec = Field(description="The desired server.")
    status: MCPServerStatus | None = Field(default=None, description="Observed state.")
