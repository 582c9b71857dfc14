"""The generated CRDs: current, deterministic, structural, and enforcing every rule offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pydantic
import pytest
from click.testing import CliRunner

from corral.api.crds import build_crd, render_crds, stale_files
from corral.api.kinds import KINDS
from corral.cli import cli
from tests.api.manifests import INVALID, Invalid, example_documents, without_none
from tests.api.schema_check import check_object

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
CRDS = {kind.kind: build_crd(kind) for kind in KINDS}
MODELS = {kind.kind: kind.model for kind in KINDS}
_FORBIDDEN = ("$ref", "allOf", "oneOf", "not", "nullable", "title", "$defs")


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found.extend(_nodes(sub, f"{path}.{name}"))
    if "items" in node:
        found.extend(_nodes(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(_nodes(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_committed_crds_match_the_models() -> None:
    assert stale_files(CRDS_DIR) == [], "crds/ is stale: run `corral crds generate`"


def test_generation_is_deterministic() -> None:
    assert render_crds() == render_crds()
    assert list(render_crds()) == sorted(render_crds())


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural_and_described(kind: str) -> None:
    problems = []
    for path, node in _nodes(_schema(kind)):
        problems.extend(f"{path}: has {key}" for key in _FORBIDDEN if key in node)
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: anyOf outside int-or-string")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        if not typed and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        field = path and path != ".metadata" and not path.endswith(("]", "}"))
        if field and "description" not in node:
            problems.append(f"{path}: no description")
        if path not in (".apiVersion", ".kind") and node.get("type") == "string":
            bounded = "maxLength" in node or "enum" in node or node.get("format") == "date-time"
            if not bounded:
                problems.append(f"{path}: string without maxLength (CEL cost)")
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems (CEL cost)")
    assert problems == []


def test_every_cel_rule_compiles() -> None:
    rules = [
        rule["rule"]
        for crd in CRDS.values()
        for _, node in _nodes(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", ())
    ]
    assert len(rules) >= 25
    for text in rules:
        cel.compile(text)


def test_server_names_columns_and_categories() -> None:
    spec = CRDS["MCPServer"]["spec"]
    assert spec["names"]["shortNames"] == ["mcps"]
    assert spec["names"]["categories"] == ["corral", "mcp"]
    version = spec["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Tenancy",
        "Tools",
        "URL",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
    tenancy = _schema("MCPServer")["properties"]["spec"]["properties"]["tenancy"]
    assert tenancy["enum"] == ["shared", "perUser"]
    assert "default" not in tenancy, "a CRD default would hide the catalog entry's default"


def test_short_names() -> None:
    names = {kind: crd["spec"]["names"]["shortNames"] for kind, crd in CRDS.items()}
    assert names == {
        "MCPServer": ["mcps"],
        "MCPCatalogEntry": ["mcpce"],
        "AccessPolicy": ["ap"],
        "MCPServerInstance": ["mcpsi"],
    }


def test_durations_and_quantities_are_int_or_string() -> None:
    spec = _schema("MCPServer")["properties"]["spec"]["properties"]
    assert spec["idleTimeout"]["x-kubernetes-int-or-string"] is True
    assert spec["startupTimeout"]["x-kubernetes-int-or-string"] is True
    quantity = spec["resources"]["properties"]["limits"]["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True
    assert "pattern" in quantity


def test_examples_cover_every_kind_and_runtime() -> None:
    docs = [doc for _, doc in example_documents()]
    assert {d["kind"] for d in docs} == set(CRDS)
    runtimes = set()
    for doc in docs:
        runtime = doc["spec"].get("runtime")
        if doc["kind"] == "MCPServer" and runtime is None:
            runtimes.add("catalogEntry")
        elif runtime:
            runtimes.update(runtime)
    assert runtimes >= {"container", "stdio", "npx", "uvx", "remote", "catalogEntry"}


@pytest.mark.parametrize(("path", "doc"), example_documents(), ids=lambda v: str(v)[:40])
def test_example_passes_the_schema_offline(path: str, doc: dict[str, Any]) -> None:
    assert check_object(CRDS[doc["kind"]], doc) == [], path
    MODELS[doc["kind"]].model_validate(doc)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_offline_with_its_message(case: Invalid) -> None:
    manifest = without_none(case.manifest)
    errors = check_object(CRDS[manifest["kind"]], manifest)
    if case.cel:
        assert any(case.message in e for e in errors), errors
    else:
        assert errors
    with pytest.raises(pydantic.ValidationError) as raised:
        MODELS[manifest["kind"]].model_validate(manifest)
    if case.cel:
        assert case.message in str(raised.value)


def test_cli_generate_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "crds"
    stale = runner.invoke(cli, ["crds", "generate", "--output-dir", str(out), "--check"])
    assert stale.exit_code == 1
    assert "stale CRDs" in stale.output
    written = runner.invoke(cli, ["crds", "generate", "--output-dir", str(out)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in out.iterdir()) == sorted(render_crds())
    assert (
        runner.invoke(cli, ["crds", "generate", "--output-dir", str(out), "--check"]).exit_code == 0
    )
    (out / "corral.dev_mcpservers.yaml").write_text("edited\n")
    edited = runner.invoke(cli, ["crds", "generate", "--output-dir", str(out), "--check"])
    assert edited.exit_code == 1
    assert "corral.dev_mcpservers.yaml" in edited.output
