"""Status conditions: the standard types and pure functions to update them.

Rule: no I/O and no clock reads; the caller passes `now`. `set_condition` keeps
`lastTransitionTime` when the status did not change, so a condition's age means something.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from corral.api.base import CorralModel

READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONFIG_VALID = "ConfigValid"
STANDARD_TYPES = (READY, AVAILABLE, PROGRESSING, DEGRADED, CONFIG_VALID)

REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
Status = Literal["True", "False", "Unknown"]


class Condition(CorralModel):
    """One aspect of an object's state (Kubernetes condition conventions)."""

    type: Annotated[str, Field(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")] = (
        Field(description="Condition type: Ready, Available, Progressing, Degraded or ConfigValid.")
    )
    status: Status = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)] = Field(
        description="A CamelCase word saying why, for machines."
    )
    message: Annotated[str, Field(max_length=32768)] = Field(
        default="", description="Why, for people: what is wrong and what to do."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The metadata.generation this condition describes."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )


ConditionList = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


def set_condition(
    conditions: Sequence[Condition], new: Condition, now: datetime
) -> list[Condition]:
    """`conditions` with `new` put in place of the condition of the same type.

    `lastTransitionTime` is kept from the old condition when the status is unchanged, and is
    `now` otherwise. Order is kept; a new type is appended.
    """
    result: list[Condition] = []
    replaced = False
    for old in conditions:
        if old.type != new.type:
            result.append(old)
            continue
        since = old.last_transition_time if old.status == new.status else now
        result.append(new.model_copy(update={"last_transition_time": since or now}))
        replaced = True
    if not replaced:
        result.append(new.model_copy(update={"last_transition_time": now}))
    return result


def find_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    """The condition of `type_`, or None."""
    return next((c for c in conditions or () if c.type == type_), None)


def is_true(conditions: Sequence[Condition] | None, type_: str) -> bool:
    """Whether the condition of `type_` exists with status True."""
    found = find_condition(conditions, type_)
    return found is not None and found.status == "True"


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    """`conditions` without the condition of `type_`."""
    return [c for c in conditions if c.type != type_]
