"""MCPServerInstance: one user's instance of a perUser MCPServer.

Rule: the gateway creates it (owner and parent never change afterwards); the operator runs it
like a one-user server and deletes it after the parent's idleTimeout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel
from corral.api.common import DnsSubdomain
from corral.api.conditions import ConditionList
from corral.api.meta import ObjectMeta
from corral.api.servers import SERVER_NAME_RULE


class InstanceOwner(CorralModel):
    """The user an instance belongs to."""

    username: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="The user's stable username (as in identity assertions' `sub`)."
    )
    email: Annotated[str, Field(max_length=320)] | None = Field(
        default=None, description="The user's email, for display."
    )


class MCPServerInstanceSpec(CorralModel):
    """Which server, for whom. Immutable once created."""

    server: DnsSubdomain = Field(description="The parent MCPServer (tenancy perUser).")
    owner: InstanceOwner = Field(description="The user this instance serves.")

    cel_rules = (
        CelRule(
            rule="self == oldSelf",
            message="spec is immutable: delete the instance and let the gateway create a new one",
            check=lambda _: True,
        ),
    )


class MCPServerInstanceStatus(CorralModel):
    """What the operator and gateway observed."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    conditions: ConditionList | None = Field(
        default=None, description="Ready, Available, Progressing, Degraded."
    )
    endpoint: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="In-cluster address of the instance's shim."
    )
    ready_replicas: int | None = Field(default=None, description="Replicas ready (0 or 1).")
    last_activity: datetime | None = Field(
        default=None, description="Time of the user's last call (the gateway updates it)."
    )


class MCPServerInstance(CorralModel):
    """An MCPServerInstance resource."""

    cel_rules = (SERVER_NAME_RULE,)

    api_version: Literal["corral.dev/v1alpha1"] = Field(
        default="corral.dev/v1alpha1", description="API version."
    )
    kind: Literal["MCPServerInstance"] = Field(default="MCPServerInstance", description="Kind.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: MCPServerInstanceSpec = Field(description="Which server, for whom.")
    status: MCPServerInstanceStatus | None = Field(default=None, description="Observed state.")
