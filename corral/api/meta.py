"""The part of Kubernetes object metadata the models read.

Rule: metadata belongs to the API server, so unknown metadata fields are kept, not refused.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ObjectMeta(BaseModel):
    """Standard object metadata (name, namespace, labels, ...); other fields pass through."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    name: Annotated[str, Field(max_length=253)] | None = Field(default=None, description="Name.")
    namespace: str | None = Field(default=None, description="Namespace.")
    labels: dict[str, str] | None = Field(default=None, description="Labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations.")
    generation: int | None = Field(default=None, description="Spec generation.")
    uid: str | None = Field(default=None, description="Unique id.")
