"""Field types shared by several kinds: names, globs, durations, value references, selectors.

Rule: a constraint that fits in one field is expressed here once, as a type, so that the CRD
schema and pydantic validation agree. Nothing here does I/O.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel, FieldRules, count_set

GLOB_MAX = 256
_GLOB_FORBIDDEN = frozenset("[]{}")
_GLOB_FORBIDDEN_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def glob_is_well_formed(pattern: str) -> bool:
    """A glob is 1-256 characters, with no separators (Unicode Z*: spaces), control (Cc) or
    format (Cf) characters and no `[`, `]`, `{`, `}` (character classes and braces are not
    supported; `*` and `?` are). Categories, not `\\s`, so Go's RE2 and Python agree."""
    if not 0 < len(pattern) <= GLOB_MAX:
        return False
    return not any(
        c in _GLOB_FORBIDDEN or unicodedata.category(c) in _GLOB_FORBIDDEN_CATEGORIES
        for c in pattern
    )


GLOB_RULE = CelRule(
    rule=r"self.matches('^[^\\p{Z}\\p{Cc}\\p{Cf}\\[\\]{}]+$')",
    message=(
        "must be a glob: `*` matches any run of characters, `?` one character; "
        "no spaces, control characters or [ ] { }"
    ),
    check=glob_is_well_formed,
)

Glob = Annotated[
    str,
    Field(min_length=1, max_length=GLOB_MAX),
    FieldRules((GLOB_RULE,)),
]

DnsLabel = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=_DNS_LABEL,
        description="A Kubernetes object name (RFC 1123 label: lower case, digits, '-').",
    ),
]
DnsSubdomain = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN),
]
ShortText = Annotated[str, Field(max_length=256)]
LongText = Annotated[str, Field(max_length=4096)]


def parse_duration(value: int | str) -> int:
    """Seconds in a duration given as an integer number of seconds or as `1h30m`, `15m`, `90s`."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration {value} is negative; use 0 or more seconds")
        return value
    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise ValueError(f"duration {value!r} is not like 90, '90s', '15m' or '1h30m'")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _duration_ok(value: int | str) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


DURATION_RULE = CelRule(
    rule=(
        "type(self) == int ? self >= 0 : "
        "(self != '' && self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$'))"
    ),
    message="must be a number of seconds (0 or more) or a duration like '90s', '15m', '1h30m'",
    check=_duration_ok,
)

Duration = Annotated[
    int | str,
    Field(json_schema_extra={"maxLength": 32}),
    FieldRules((DURATION_RULE,)),
]


class KeyRef(CorralModel):
    """One key of a Secret or ConfigMap in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret or ConfigMap.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the Secret or ConfigMap."
    )
    optional: bool = Field(
        default=False, description="Start even when the object or key does not exist."
    )


class ValueFrom(CorralModel):
    """Where a value comes from: exactly one of a Secret key or a ConfigMap key."""

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")

    cel_rules = (
        CelRule(
            rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            message="valueFrom must set exactly one of secretKeyRef or configMapKeyRef",
            check=lambda v: count_set(v.secret_key_ref, v.config_map_key_ref) == 1,
        ),
    )


class EnvVar(CorralModel):
    """An environment variable of the MCP server process (never of the shim)."""

    name: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    ] = Field(description="Variable name.")
    value: LongText | None = Field(default=None, description="A literal value.")
    value_from: ValueFrom | None = Field(
        default=None, description="Take the value from a Secret or ConfigMap key."
    )

    cel_rules = (
        CelRule(
            rule="has(self.value) != has(self.valueFrom)",
            message="env entries must set exactly one of value or valueFrom",
            check=lambda v: count_set(v.value, v.value_from) == 1,
        ),
    )


class FileSpec(CorralModel):
    """A file mounted read-only into the MCP server container (never into the shim)."""

    path: Annotated[str, Field(min_length=2, max_length=1024)] = Field(
        description="Absolute path of the file inside the server container."
    )
    content: Annotated[str, Field(max_length=65536)] | None = Field(
        default=None, description="Literal file content."
    )
    value_from: ValueFrom | None = Field(
        default=None, description="Take the content from a Secret or ConfigMap key."
    )
    mode: Annotated[int, Field(ge=0, le=0o777)] = Field(
        default=0o440, description="File permission bits (decimal in YAML: 288 is 0440)."
    )

    cel_rules = (
        CelRule(
            rule="has(self.content) != has(self.valueFrom)",
            message="files entries must set exactly one of content or valueFrom",
            check=lambda v: count_set(v.content, v.value_from) == 1,
        ),
        CelRule(
            rule="self.path.startsWith('/') && !self.path.contains('..')",
            message="files path must be absolute and must not contain '..'",
            check=lambda v: v.path.startswith("/") and ".." not in v.path,
        ),
    )


class LabelSelectorRequirement(CorralModel):
    """One expression of a label selector."""

    key: Annotated[str, Field(min_length=1, max_length=317)] = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the label's value relates to `values`."
    )
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] | None = (
        Field(default=None, description="Values for In and NotIn; empty for Exists/DoesNotExist.")
    )

    cel_rules = (
        CelRule(
            rule=(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : !has(self.values) || size(self.values) == 0"
            ),
            message=(
                "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"
            ),
            check=lambda v: bool(v.values) == (v.operator in ("In", "NotIn")),
        ),
    )


class LabelSelector(CorralModel):
    """A Kubernetes label selector; an empty selector selects everything."""

    match_labels: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=64)] | None
    ) = Field(default=None, description="Labels that must all be present with these values.")
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] | None = (
        Field(default=None, description="Expressions that must all hold.")
    )

    def matches(self, labels: dict[str, str] | Any) -> bool:
        """Whether `labels` satisfy the selector (Kubernetes semantics)."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for expr in self.match_expressions or ():
            present = key_in = expr.key in labels
            if expr.operator == "In":
                key_in = present and labels[expr.key] in (expr.values or ())
            elif expr.operator == "NotIn":
                key_in = not present or labels[expr.key] not in (expr.values or ())
            elif expr.operator == "DoesNotExist":
                key_in = not present
            if not key_in:
                return False
        return True


class LocalObjectReference(CorralModel):
    """A reference to an object of a known kind in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the object.")
