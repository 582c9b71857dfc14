"""The generated CRDs on a real API server: they install, accept every example, reject every
invalid manifest with the message its rule defines, explain fields, and print columns."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from corral.api.kinds import KINDS
from corral.api.registry import REGISTRY_NAME_ANNOTATION
from e2e.cluster.launcher import Cluster
from e2e.cluster.waiting import wait_for
from tests.api.manifests import EXAMPLES, INVALID, Invalid, server, without_none
from tests.api.test_registry import NPM_SERVER

pytestmark = pytest.mark.cluster

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
TIMEOUT = 120.0
CORRAL = str(Path(sys.executable).parent / "corral")
EXAMPLE_FILES = sorted(
    p
    for sub in ("catalog", "servers", "policies", "instances")
    for p in (EXAMPLES / sub).glob("*.yaml")
)


@pytest.fixture(scope="module")
def crds_installed(k8s_cluster: Cluster) -> Cluster:
    """Corral's CRDs applied server-side and Established (left installed for later tests)."""
    k8s_cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=corral-tests",
        "-f", str(CRDS_DIR),
    )  # fmt: skip
    k8s_cluster.wait_established([kind.crd_name for kind in KINDS], TIMEOUT)
    return k8s_cluster


@pytest.fixture(scope="module")
def api_namespace(crds_installed: Cluster) -> Iterator[str]:
    """One namespace for this module's objects, deleted afterwards without waiting."""
    name = f"api-{uuid.uuid4().hex[:8]}"
    with crds_installed.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        yield name
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


def _create(cluster: Cluster, namespace: str, manifest: dict[str, Any], *, dry_run: bool) -> Any:
    args = ["-n", namespace, "create", "--validate=strict", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.run_kubectl(*args, stdin=json.dumps(manifest), check=False)


def test_crds_are_established_with_names_and_categories(crds_installed: Cluster) -> None:
    for kind in KINDS:
        out = crds_installed.run_kubectl(
            "get", f"customresourcedefinition/{kind.crd_name}", "-o", "json"
        )
        crd = json.loads(out.stdout)
        accepted = crd["status"]["acceptedNames"]
        assert accepted["shortNames"] == list(kind.short_names)
        assert accepted["categories"] == ["corral", "mcp"]
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established[0]["status"] == "True"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_is_accepted(crds_installed: Cluster, api_namespace: str, path: Path) -> None:
    result = crds_installed.run_kubectl(
        "-n", api_namespace, "apply", "--server-side", "--validate=strict", "-f", str(path),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_with_its_message(
    crds_installed: Cluster, api_namespace: str, case: Invalid
) -> None:
    result = _create(crds_installed, api_namespace, without_none(case.manifest), dry_run=True)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.message in result.stderr


def test_an_imported_server_json_is_accepted_as_is(
    crds_installed: Cluster, api_namespace: str, tmp_path: Path
) -> None:
    """`corral catalog import` writes a manifest the API server takes with strict validation."""
    source = tmp_path / "server.json"
    source.write_text(json.dumps(NPM_SERVER))
    imported = subprocess.run(
        [CORRAL, "catalog", "import", str(source), "--namespace", api_namespace],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    manifest = yaml.safe_load(imported.stdout)
    result = _create(crds_installed, api_namespace, manifest, dry_run=False)
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        crds_installed.run_kubectl(
            "-n", api_namespace, "get", "mcpcatalogentry", manifest["metadata"]["name"],
            "-o", "json",
        ).stdout
    )  # fmt: skip
    assert stored["metadata"]["annotations"][REGISTRY_NAME_ANNOTATION] == NPM_SERVER["name"]
    assert stored["spec"]["runtime"] == manifest["spec"]["runtime"]


def test_unknown_field_is_refused(crds_installed: Cluster, api_namespace: str) -> None:
    result = _create(crds_installed, api_namespace, server(replica=2), dry_run=True)
    assert result.returncode != 0
    assert 'unknown field "spec.replica"' in result.stderr


def test_defaults_are_applied_and_null_is_pruned(
    crds_installed: Cluster, api_namespace: str
) -> None:
    filters = [{"name": "f", "url": "https://filter.example.com/check"}]
    manifest = server(tenancy="perUser", replicas=None, filters=filters)
    manifest["metadata"]["name"] = "defaults"
    manifest["spec"]["replicas"] = None
    result = _create(crds_installed, api_namespace, manifest, dry_run=False)
    assert result.returncode == 0, result.stderr
    got = json.loads(
        crds_installed.run_kubectl(
            "-n", api_namespace, "get", "mcps", "defaults", "-o", "json"
        ).stdout
    )
    spec = got["spec"]
    assert "replicas" not in spec
    assert spec["tenancy"] == "perUser"
    assert spec["filters"][0]["failurePolicy"] == "Fail"
    assert spec["filters"][0]["timeoutSeconds"] == 5
    assert spec["runtime"]["container"]["port"] == 8080
    assert spec["runtime"]["container"]["transport"] == "streamable-http"


def test_explain_prints_the_field_description(crds_installed: Cluster) -> None:
    def explained() -> str:
        result = crds_installed.run_kubectl("explain", "mcpserver.spec.tenancy", check=False)
        return result.stdout if result.returncode == 0 else ""

    text = " ".join(wait_for("kubectl explain mcpserver.spec.tenancy", explained, TIMEOUT).split())
    assert "shared: one Deployment serves every allowed user" in text
    assert "perUser" in text


def test_get_mcps_prints_the_columns_and_status(
    crds_installed: Cluster, api_namespace: str
) -> None:
    manifest = server()
    manifest["metadata"]["name"] = "columns"
    assert _create(crds_installed, api_namespace, manifest, dry_run=False).returncode == 0
    status = {
        "status": {
            "toolCount": 7,
            "tenancy": "shared",
            "url": "https://gw.example.com/mcp/ns/columns",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Running",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    crds_installed.run_kubectl(
        "-n", api_namespace, "patch", "mcps", "columns", "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    table = crds_installed.run_kubectl("-n", api_namespace, "get", "mcps", "columns").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "TENANCY", "TOOLS", "URL", "AGE"]
    assert row.split()[:5] == ["columns", "True", "shared", "7", status["status"]["url"]]


def test_short_names_and_categories_resolve(crds_installed: Cluster, api_namespace: str) -> None:
    for short in ("mcps", "mcpce", "ap", "mcpsi"):
        result = crds_installed.run_kubectl("-n", api_namespace, "get", short, check=False)
        assert result.returncode == 0, result.stderr
    listed = crds_installed.run_kubectl("-n", api_namespace, "get", "corral", "-o", "name")
    assert listed.returncode == 0


def test_instance_spec_is_immutable(crds_installed: Cluster, api_namespace: str) -> None:
    instance = yaml.safe_load((EXAMPLES / "instances" / "memory-alice.yaml").read_text())
    instance["metadata"]["name"] = "immutable"
    assert _create(crds_installed, api_namespace, instance, dry_run=False).returncode == 0
    patched = crds_installed.run_kubectl(
        "-n", api_namespace, "patch", "mcpsi", "immutable", "--type=merge",
        "-p", json.dumps({"spec": {"server": "other"}}), check=False,
    )  # fmt: skip
    assert patched.returncode != 0
    assert "spec is immutable" in patched.stderr
