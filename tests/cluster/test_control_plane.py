"""The local control plane behaves like a real cluster: scheduling onto KWOK nodes, garbage
collection, RBAC, CEL validation of custom resources and namespace deletion."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.launcher import Cluster, pinned_versions
from e2e.cluster.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120.0
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }


def gone(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def is_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_api_server_reports_the_pinned_version(k8s_cluster: Cluster) -> None:
    if os.environ.get("CORRAL_TEST_USE_EXISTING_CLUSTER") == "1":
        pytest.skip("an existing cluster runs whatever version it runs")
    with k8s_cluster.api_client() as api:
        info = client.VersionApi(api).get_code()
    assert info.git_version == pinned_versions()["KUBERNETES_VERSION"]


def test_kubectl_and_helm_are_the_pinned_builds_and_reach_the_cluster(
    k8s_cluster: Cluster,
) -> None:
    versions = pinned_versions()
    client_version = json.loads(k8s_cluster.run_kubectl("version", "--client", "-o", "json").stdout)
    assert client_version["clientVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    helm = [str(k8s_cluster.helm), f"--kubeconfig={k8s_cluster.kubeconfig}"]
    helm_version = subprocess.run(
        [*helm, "version", "--short"], capture_output=True, text=True, check=True
    )
    assert helm_version.stdout.startswith(versions["HELM_VERSION"])
    releases = subprocess.run(
        [*helm, "list", "--all-namespaces", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert isinstance(json.loads(releases.stdout), list)


def test_deployment_pods_are_scheduled_on_kwok_nodes_and_become_ready(
    k8s_cluster: Cluster, namespace: str
) -> None:
    with k8s_cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(namespace, deployment("web", replicas=3))

        def ready_pods() -> list[client.V1Pod]:
            pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
            return pods if len(pods) == 3 and all(map(is_ready, pods)) else []

        pods = wait_for("3 Ready pods of Deployment web", ready_pods, TIMEOUT)
        kwok_nodes = {
            node.metadata.name
            for node in core.list_node().items
            if node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
        }
        assert {pod.spec.node_name for pod in pods} <= kwok_nodes
        assert all(pod.status.phase == "Running" for pod in pods)
        wait_for(
            "the Deployment to report 3 available replicas",
            lambda: (
                apps.read_namespaced_deployment_status("web", namespace).status.available_replicas
                == 3
            ),
            TIMEOUT,
        )


def test_deleting_an_owner_garbage_collects_its_dependents(
    k8s_cluster: Cluster, namespace: str
) -> None:
    with k8s_cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
        reference = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner.metadata.uid,
        }
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
        )
        apps.create_namespaced_deployment(namespace, deployment("owned", replicas=2))
        wait_for(
            "the Deployment's ReplicaSet",
            lambda: apps.list_namespaced_replica_set(namespace).items,
            TIMEOUT,
        )

        core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
        apps.delete_namespaced_deployment("owned", namespace, propagation_policy="Background")

        wait_for(
            "the dependent ConfigMap to be collected",
            lambda: gone(core.read_namespaced_config_map, "dependent", namespace),
            TIMEOUT,
        )
        wait_for(
            "the ReplicaSet and its Pods to be collected",
            lambda: (
                not apps.list_namespaced_replica_set(namespace).items
                and not core.list_namespaced_pod(namespace).items
            ),
            TIMEOUT,
        )


def test_rbac_refuses_an_impersonated_user_without_a_role(
    k8s_cluster: Cluster, namespace: str
) -> None:
    user = f"restricted-{uuid.uuid4().hex[:6]}"
    with k8s_cluster.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "configmap-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "configmap-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "configmap-reader",
                },
                "subjects": [{"kind": "User", "name": user}],
            },
        )

    with k8s_cluster.api_client() as api:
        api.set_default_header("Impersonate-User", user)
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_secret(namespace)
        assert refused.value.status == 403
        assert json.loads(refused.value.body)["message"] == (
            f'secrets is forbidden: User "{user}" cannot list resource "secrets" '
            f'in API group "" in the namespace "{namespace}"'
        )

    wait_for(
        "the RoleBinding to let the user list ConfigMaps",
        lambda: (
            k8s_cluster.run_kubectl(
                f"--as={user}", "-n", namespace, "get", "configmaps", check=False
            ).returncode
            == 0
        ),
        TIMEOUT,
    )


def widget_crd(group: str) -> dict[str, Any]:
    bounds = {"type": "integer", "minimum": 0}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"minReplicas": bounds, "maxReplicas": bounds},
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": CEL_MESSAGE,
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(group: str, name: str, low: int, high: int) -> str:
    return json.dumps(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"minReplicas": low, "maxReplicas": high},
        }
    )


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(
    k8s_cluster: Cluster, namespace: str
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.corral.test"
    crd = f"customresourcedefinition/widgets.{group}"
    k8s_cluster.run_kubectl("apply", "-f", "-", stdin=json.dumps(widget_crd(group)))
    try:
        k8s_cluster.wait_established([f"widgets.{group}"], TIMEOUT)
        bad = k8s_cluster.run_kubectl(
            "-n", namespace, "create", "-f", "-", stdin=widget(group, "bad", 5, 2), check=False
        )
        good = k8s_cluster.run_kubectl(
            "-n", namespace, "create", "-f", "-", stdin=widget(group, "good", 1, 3), check=False
        )
    finally:
        k8s_cluster.run_kubectl("delete", crd, "--wait=false")
    assert bad.returncode != 0
    assert CEL_MESSAGE in bad.stderr
    assert 'The Widget "bad" is invalid' in bad.stderr
    assert good.returncode == 0, good.stderr


def test_namespace_deletion_completes(k8s_cluster: Cluster) -> None:
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    with k8s_cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        core.create_namespaced_config_map(name, {"metadata": {"name": "settings"}})
        apps.create_namespaced_deployment(name, deployment("web", replicas=2))
        wait_for(
            "the Deployment's Pods",
            lambda: len(core.list_namespaced_pod(name).items) == 2,
            TIMEOUT,
        )

        core.delete_namespace(name)

        wait_for(f"namespace {name} to be gone", lambda: gone(core.read_namespace, name), TIMEOUT)
