"""Shared building blocks of the resource models.

Rule: every model is a `CorralModel` (camelCase on the wire, unknown fields refused, every field
described). A cross-field rule is written once as a `CelRule`: its CEL text goes into the CRD's
`x-kubernetes-validations`, its Python predicate runs in pydantic validation, and both report the
same message. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

GROUP = "corral.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
VALIDATIONS_KEY = "x-kubernetes-validations"


@dataclass(frozen=True)
class CelRule:
    """A rule enforced twice with one message: by the API server (CEL) and by pydantic (`check`).

    `check` receives the validated model (object rules) or the value (field rules) and returns
    True when the value is valid.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def _add_object_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules: tuple[CelRule, ...] = getattr(model, "cel_rules", ())
    schema.pop("title", None)
    if rules:
        schema[VALIDATIONS_KEY] = [r.schema() for r in rules]


class CorralModel(BaseModel):
    """Base of every resource model: camelCase aliases, no unknown fields, CEL rules mirrored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_add_object_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(frozen=True)
class FieldRules:
    """`Annotated` metadata attaching CEL rules to one field's value, mirrored in pydantic."""

    rules: tuple[CelRule, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS_KEY, []).extend(r.schema() for r in self.rules)
        return json_schema

    def _check(self, value: Any) -> Any:
        for rule in self.rules:
            if not rule.check(value):
                raise ValueError(rule.message)
        return value


def count_set(*values: object) -> int:
    """How many of the given optional values are set (not None)."""
    return sum(v is not None for v in values)
