"""`corral catalog import`: server.json in, an MCPCatalogEntry manifest out, problems said."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from corral.api.catalog import MCPCatalogEntry
from corral.api.registry import REGISTRY_NAME_ANNOTATION
from corral.cli import cli
from tests.api.test_registry import NPM_SERVER


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["catalog", "import", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_a_server_json_file_becomes_a_manifest_with_its_registry_name(tmp_path: Path) -> None:
    source = tmp_path / "server.json"
    source.write_text(json.dumps(NPM_SERVER))
    code, out, err = run(str(source), "--namespace", "tools")
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert (manifest["apiVersion"], manifest["kind"]) == ("corral.dev/v1alpha1", "MCPCatalogEntry")
    assert manifest["metadata"] == {
        "name": "io-github-acme-weather-server",
        "namespace": "tools",
        "annotations": {REGISTRY_NAME_ANNOTATION: "io.github.acme/Weather_Server"},
    }
    entry = MCPCatalogEntry.model_validate(manifest)
    assert entry.spec.runtime.kind == "npx"
    assert "warning: " in err, "the nuget package that cannot run is reported"


def test_a_registry_api_answer_on_stdin_is_unwrapped_and_renamed() -> None:
    answer = {"server": NPM_SERVER, "_meta": {"io.modelcontextprotocol.registry/official": {}}}
    code, out, err = run("-", "--name", "weather", stdin=json.dumps(answer))
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert manifest["metadata"]["name"] == "weather"
    assert "namespace" not in manifest["metadata"]


def test_bad_input_is_an_error_and_writes_no_manifest(tmp_path: Path) -> None:
    source = tmp_path / "server.json"
    source.write_text("{not json")
    code, out, err = run(str(source))
    assert (code, out) == (1, "")
    assert "not JSON" in err

    source.write_text(json.dumps(["a", "list"]))
    code, out, err = run(str(source))
    assert (code, out) == (1, "")
    assert "not a server.json document" in err

    nothing_runs = {"name": "io.example/x", "packages": [{"registryType": "nuget"}]}
    source.write_text(json.dumps(nothing_runs))
    code, out, err = run(str(source))
    assert (code, out) == (1, "")
    assert "nothing in this server.json can run" in err


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "server.json"
    source.write_text(json.dumps(NPM_SERVER))
    code, out, err = run(str(source), "--namespace", "Team_A")
    assert (code, out) == (2, "")
    assert "--namespace" in err
    assert "not a namespace name" in err
    code, out, err = run(str(source), "--name", "-bad.")
    assert (code, out) == (2, "")
    assert "not a Kubernetes object name" in err
