"""An offline stand-in for the API server's CRD validation, for tests without a cluster.

It applies schema defaults, then checks the OpenAPI keywords the generated CRDs use (type,
required, enum, pattern, lengths, bounds, list-map keys) and evaluates every
`x-kubernetes-validations` rule with the `cel` package. Transition rules (those reading
`oldSelf`) are skipped: there is no old object on create.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import cel

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "number": (int, float),
}


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in (the API server defaults before validating)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


def _type_ok(schema: dict[str, Any], value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None:
        return True
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[expected])


def _keyword_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value: {value!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']!r}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: Too long")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: should be at least {schema['minLength']} chars long")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: should be less than or equal to {schema['maximum']}")
    if isinstance(value, list | dict):
        if len(value) > schema.get("maxItems", schema.get("maxProperties", len(value))):
            errors.append(f"{path}: Too many")
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: should have at least {schema['minItems']} items")
    return errors


def _rule_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", ()):
        if "oldSelf" in rule["rule"]:
            continue
        try:
            ok = cel.compile(rule["rule"]).execute({"self": value})
        except Exception as error:  # an erroring rule rejects, as in the API server
            errors.append(f"{path}: rule {rule['rule']!r} failed to evaluate: {error}")
            continue
        if ok is not True:
            errors.append(f"{path}: {rule['message']}")
    return errors


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every violation of `schema` by `value` (defaults must be applied first)."""
    if not _type_ok(schema, value):
        return [f"{path}: Invalid value: expected {schema.get('type')}"]
    errors = _keyword_errors(schema, value, path)
    if isinstance(value, dict):
        errors.extend(
            f"{path}.{name}: Required value"
            for name in schema.get("required", ())
            if name not in value
        )
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                errors.extend(validate(props[key], sub, f"{path}.{key}"))
            elif isinstance(extra, dict):
                errors.extend(validate(extra, sub, f"{path}.{key}"))
            elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors.extend(validate(schema["items"], item, f"{path}[{i}]"))
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(k) for k in keys) for item in value]
            if len(seen) != len(set(seen)):
                errors.append(f"{path}: Duplicate value")
    errors.extend(_rule_errors(schema, value, path))
    return errors


def check_object(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Validate a whole object against a CRD as the API server would on create."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return validate(schema, apply_defaults(schema, obj))
