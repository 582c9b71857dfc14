"""The chart against the real API server: its rendered output passes a server-side dry run, and
`helm install` into a namespace labelled Pod Security `restricted` creates pods the admission
accepts; `helm uninstall` takes them away.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from e2e.cluster.launcher import Cluster
from e2e.cluster.waiting import wait_for
from tests.packaging.chart import CHART, FULL_VALUES, render, run_helm, value_args

pytestmark = pytest.mark.cluster
WAIT = 90.0


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def crds_installed(k8s_cluster: Cluster) -> Cluster:
    k8s_cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=corral-tests",
        "-f", str(CHART / "crds"),
    )  # fmt: skip
    k8s_cluster.wait_established(["clusterkopfpeerings.kopf.dev", "mcpservers.corral.dev"], 60)
    return k8s_cluster


@pytest.fixture
def namespaces(k8s_cluster: Cluster, suffix: str) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        k8s_cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_rendered_chart_passes_a_server_side_dry_run(
    crds_installed: Cluster, suffix: str, namespaces: list[str]
) -> None:
    cluster = crds_installed
    release_namespace, server_namespace = f"corral-{suffix}", f"mcp-{suffix}"
    rendered = render(
        cluster.helm,
        release=f"dry-{suffix}",
        namespace=release_namespace,
        values=value_args(
            files=[FULL_VALUES],
            sets={"operator.peeringName": f"dry-{suffix}"},
            json_sets={"serverNamespaces": f'["{server_namespace}"]'},
        ),
    )
    namespaces += [release_namespace, server_namespace]
    only_namespaces = [o for o in rendered.objects if o["kind"] == "Namespace"]
    assert len(only_namespaces) == 2
    for namespace in only_namespaces:
        cluster.run_kubectl("create", "namespace", namespace["metadata"]["name"])
    # ServiceMonitor needs the Prometheus operator's CRD, which this cluster does not have.
    result = cluster.run_kubectl(
        "apply", "--dry-run=server", "--server-side", "--field-manager=corral-tests", "-f", "-",
        stdin=rendered.yaml(without_kinds={"ServiceMonitor"}),
    )  # fmt: skip
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(rendered.objects) - 1
    assert all("(server dry run)" in line for line in applied)


def _pods(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    selector = f"app.kubernetes.io/name={name}"
    pods: list[client.V1Pod] = (
        client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    )
    return pods


def test_helm_install_into_a_restricted_namespace_and_uninstall(
    crds_installed: Cluster, suffix: str, namespaces: list[str], tmp_path: Path
) -> None:
    cluster = crds_installed
    namespace, release = f"corral-{suffix}", f"inst-{suffix}"
    namespaces.append(namespace)
    cluster.run_kubectl("create", "namespace", namespace)
    cluster.run_kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    refused = cluster.run_kubectl(
        "run", "plain", "--image=busybox:1.36.1", "--dry-run=server", "-n", namespace,
        check=False,
    )  # fmt: skip
    assert "violates PodSecurity" in refused.stderr, "the namespace must enforce restricted"
    helm = [f"--kubeconfig={cluster.kubeconfig}", "--namespace", namespace]
    values = value_args(sets={
        "gateway.publicBaseUrl": "https://corral.example.com",
        "operator.peeringName": f"peer-{suffix}",
    })  # fmt: skip
    output = run_helm(cluster.helm, "install", release, str(CHART), *helm, *values)
    assert "kubectl -n" in output, "NOTES.txt tells the user what to do next"
    assert "/mcp/<namespace>/<server>" in output
    with cluster.api_client() as api:
        operators = wait_for(
            "operator pods admitted",
            lambda: len(_pods(api, namespace, "corral-operator")) == 2,
            WAIT,
        )
        assert operators
        assert wait_for(
            "gateway pods admitted", lambda: _pods(api, namespace, "corral-gateway"), WAIT
        )
        run_helm(cluster.helm, "uninstall", release, *helm, "--wait", "--timeout=90s")
        assert wait_for(
            "pods gone",
            lambda: (
                not _pods(api, namespace, "corral-operator")
                and not _pods(api, namespace, "corral-gateway")
            ),
            WAIT,
        )
        roles = client.RbacAuthorizationV1Api(api).list_cluster_role(
            label_selector=f"app.kubernetes.io/instance={release}"
        )
        assert not roles.items
