"""MCPCatalogEntry: a registry entry that MCPServers instantiate.

Rule: describes and validates the resource; `corral.api.registry` imports entries from the MCP
Registry `server.json` format.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel
from corral.api.common import Duration, EnvVar, ShortText
from corral.api.conditions import ConditionList
from corral.api.meta import ObjectMeta
from corral.api.runtimes import Runtime, Url
from corral.api.servers import ENV_LIST, Audit, ResourceRequirements, ToolSubset


class ConfigItem(CorralModel):
    """A setting an MCPServer supplies when instantiating the entry."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Name the MCPServer uses in catalogEntry.config."
    )
    description: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="What the setting is for."
    )
    required: bool = Field(default=False, description="MCPServers must set it.")
    secret: bool = Field(
        default=False, description="The value is secret: it must come from a Secret."
    )
    default: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Value used when the MCPServer sets none."
    )
    target: Literal["env", "header", "arg", "file"] = Field(
        default="env",
        description="Where the value goes: env variable, header (remote only), argument or file.",
    )
    key: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description="Env variable name, header name, argument text or file path (default: name).",
    )

    cel_rules = (
        CelRule(
            rule="!self.secret || self.target != 'arg'",
            message=(
                "a secret config item cannot target arg (arguments are visible to every process)"
            ),
            check=lambda c: not c.secret or c.target != "arg",
        ),
        CelRule(
            rule="!self.secret || !has(self.default)",
            message="a secret config item cannot have a default",
            check=lambda c: not c.secret or c.default is None,
        ),
    )


class ToolPreview(CorralModel):
    """A tool the entry is known to offer, shown before anyone runs it."""

    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Tool name.")
    description: Annotated[str, Field(max_length=4096)] = Field(
        default="", description="What the tool does."
    )


class CatalogDefaults(CorralModel):
    """Server settings an instantiating MCPServer inherits unless it sets its own."""

    tenancy: Literal["shared", "perUser"] | None = Field(
        default=None, description="Default tenancy."
    )
    idle_timeout: Duration | None = Field(default=None, description="Default idle timeout.")
    startup_timeout: Duration | None = Field(default=None, description="Default startup timeout.")
    resources: ResourceRequirements | None = Field(default=None, description="Default resources.")
    tools: ToolSubset | None = Field(default=None, description="Default tool subset.")
    env: Annotated[list[EnvVar], Field(max_length=128, json_schema_extra=ENV_LIST)] | None = Field(
        default=None, description="Default environment."
    )
    audit: Audit | None = Field(default=None, description="Default audit settings.")


class MCPCatalogEntrySpec(CorralModel):
    """A server offering: what it is, how it runs, and what it needs configured."""

    title: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Display name.")
    description: Annotated[str, Field(max_length=4096)] = Field(
        default="", description="What the server does."
    )
    icon: Url | None = Field(default=None, description="Icon URL.")
    repository: Url | None = Field(default=None, description="Source repository URL.")
    version: ShortText | None = Field(default=None, description="Version of the server offered.")
    categories: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=32)] | None
    ) = Field(default=None, description="Catalog categories.")
    runtime: Runtime = Field(description="How the server runs.")
    config: Annotated[list[ConfigItem], Field(max_length=64, json_schema_extra=ENV_LIST)] | None = (
        Field(default=None, description="Settings instantiating servers supply.")
    )
    tool_preview: Annotated[list[ToolPreview], Field(max_length=512)] | None = Field(
        default=None, description="Tools the server is known to offer."
    )
    defaults: CatalogDefaults | None = Field(default=None, description="Default server settings.")

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.config) || has(self.runtime.remote) || "
                "self.config.all(c, c.target != 'header')"
            ),
            message="config target header applies only to a remote runtime",
            check=lambda s: (
                s.runtime.remote is not None or all(c.target != "header" for c in s.config or ())
            ),
        ),
        CelRule(
            rule=(
                "!has(self.config) || !has(self.runtime.remote) || "
                "self.config.all(c, c.target == 'header')"
            ),
            message="a remote runtime has no process: config items must target header",
            check=lambda s: (
                s.runtime.remote is None or all(c.target == "header" for c in s.config or ())
            ),
        ),
    )


class MCPCatalogEntryStatus(CorralModel):
    """What the operator observed."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    conditions: ConditionList | None = Field(default=None, description="ConfigValid.")
    servers: int | None = Field(default=None, description="MCPServers instantiating this entry.")


class MCPCatalogEntry(CorralModel):
    """An MCPCatalogEntry resource."""

    api_version: Literal["corral.dev/v1alpha1"] = Field(
        default="corral.dev/v1alpha1", description="API version."
    )
    kind: Literal["MCPCatalogEntry"] = Field(default="MCPCatalogEntry", description="Kind.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: MCPCatalogEntrySpec = Field(description="The entry.")
    status: MCPCatalogEntryStatus | None = Field(default=None, description="Observed state.")
