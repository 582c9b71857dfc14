"""CustomResourceDefinitions generated from the models.

Rule: pure and deterministic: the same models give byte-identical YAML (keys sorted).

Pydantic's JSON Schema is rewritten into a Kubernetes structural schema:
* `$ref`/`allOf` are inlined; titles dropped; `additionalProperties: false` dropped (the API server
  prunes or, with strict field validation, refuses unknown fields).
* Optional fields: the `null` branch is dropped and the field is simply not required. Fields are
  never `nullable`, so an explicit `null` is pruned by the API server like an absent field.
* `int | str` becomes `x-kubernetes-int-or-string: true`; `dict[str, Any]` becomes an object with
  `x-kubernetes-preserve-unknown-fields: true`; `const` becomes a one-value `enum`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from corral.api.base import GROUP, VALIDATIONS_KEY, VERSION
from corral.api.kinds import CATEGORIES, KINDS, Kind

_DROP = ("title",)


class SchemaError(ValueError):
    """A model produced a JSON Schema shape that has no structural equivalent."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a `$ref` (or a one-element `allOf`) by the referenced schema, keeping siblings."""
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", ())) == 1:
        ref = node["allOf"][0].get("$ref")
    if ref is None:
        return node
    target = defs[ref.rsplit("/", 1)[-1]]
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    return {**target, **siblings}


def _merge_any_of(node: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in node["anyOf"] if b.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        del rest["default"]
    if len(branches) == 1:
        return {**branches[0], **rest}
    types = sorted(b.get("type", "") for b in branches)
    if types == ["integer", "string"]:
        string = next(b for b in branches if b["type"] == "string")
        hoisted = {k: v for k, v in string.items() if k != "type"}
        return {**hoisted, **rest, "x-kubernetes-int-or-string": True}
    raise SchemaError(f"union of {types} has no structural form")


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The structural form of one JSON Schema node (recursively)."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        return structural(_merge_any_of(node), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = structural(value, defs)
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _top_schema(kind: Kind) -> dict[str, Any]:
    schema = kind.model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    rules = [rule.schema() for rule in kind.model.cel_rules]
    return {
        **({VALIDATIONS_KEY: rules} if rules else {}),
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "API version of the object: corral.dev/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"Kind of the object: {kind.kind}."},
            "metadata": {"type": "object"},
            "spec": structural(props["spec"], defs),
            "status": structural(props["status"], defs),
        },
    }


def build_crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "corral"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _top_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in kind.columns],
                }
            ],
        },
    }


def render_crds() -> dict[str, str]:
    """File name -> YAML text for every kind (`corral.dev_<plural>.yaml`)."""
    header = "# Generated by `corral crds generate` from corral/api; do not edit.\n"
    rendered = {
        f"{GROUP}_{kind.plural}.yaml": header
        + yaml.safe_dump(build_crd(kind), sort_keys=True, width=100, allow_unicode=True)
        for kind in KINDS
    }
    return dict(sorted(rendered.items()))


def stale_files(directory: Path) -> list[str]:
    """Names of files in `directory` that differ from what the models generate (or are extra)."""
    expected = render_crds()
    problems = []
    for name, text in sorted(expected.items()):
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            problems.append(name)
    problems.extend(
        sorted(p.name for p in directory.glob("*.yaml") if p.name not in expected)
        if directory.is_dir()
        else []
    )
    return problems


def write_crds(directory: Path) -> list[Path]:
    """Write every CRD into `directory`, removing generated files of kinds that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    expected = render_crds()
    for name, text in sorted(expected.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for old in directory.glob(f"{GROUP}_*.yaml"):
        if old.name not in expected:
            old.unlink()
    return written
