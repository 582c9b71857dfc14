"""Reading a manifest directory: the cluster's models, errors naming file, object and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.dev.manifests import ManifestError, load_manifests
from tests.dev.platform import EXAMPLES


def test_the_examples_load_with_the_default_namespace() -> None:
    manifests = load_manifests(EXAMPLES)
    assert {s.metadata.name for s in manifests.servers} == {"time", "everything"}
    assert {p.metadata.name for p in manifests.policies} == {"time-readers", "sandbox"}
    assert {s.metadata.namespace for s in manifests.servers} == {"default"}


def test_an_error_names_the_file_the_object_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text((EXAMPLES / "time.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: corral.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: github}\n"
        "spec: {runtime: {npx: {package: x}}, tenancy: private}\n"
    )
    with pytest.raises(ManifestError) as error:
        load_manifests(tmp_path)
    message = str(error.value)
    assert "bad.yaml" in message
    assert "MCPServer 'github'" in message
    assert "field spec.tenancy" in message
    assert "ok.yaml" not in message


def test_a_cel_rule_message_comes_through(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(
        "apiVersion: corral.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: two}\n"
        "spec: {runtime: {npx: {package: a}, uvx: {package: b}}}\n"
    )
    with pytest.raises(ManifestError, match="runtime must set exactly one of"):
        load_manifests(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Deployment\nmetadata: {name: web}\n", "kind 'Deployment' of 'web'"),
        ("apiVersion: corral.dev/v1alpha1\nkind: MCPServer\nspec: {}\n", "no metadata.name"),
        ("a: [unclosed\n", "cannot read it as YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_other_problems_are_named(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ManifestError, match=expected):
        load_manifests(tmp_path)


def test_two_objects_with_one_name_are_refused(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text((EXAMPLES / "time.yaml").read_text())
    with pytest.raises(ManifestError, match=r"also declared in a\.yaml"):
        load_manifests(tmp_path)
