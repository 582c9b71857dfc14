"""MCPServers on a real API server (KWOK nodes): objects built, rolled, collected and reported."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster.waiting import wait_for
from tests.fixtures.operator import OperatorHarness

pytestmark = pytest.mark.cluster

SERVERS = "mcpservers"


def server(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("runtime", {"container": {"image": "ghcr.io/example/mcp:1", "port": 3000}})
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": name},
        "spec": spec,
    }


def pod_hashes(harness: OperatorHarness, name: str) -> set[str]:
    pods = harness.core.list_namespaced_pod(
        harness.namespace, label_selector=f"corral.dev/workload={name}"
    ).items
    return {
        (p.metadata.annotations or {}).get("corral.dev/config-hash", "")
        for p in pods
        if p.metadata.deletion_timestamp is None
    }


def event_reasons(harness: OperatorHarness, name: str) -> list[str]:
    events = harness.core.list_namespaced_event(
        harness.namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return [e.reason for e in events]


def test_server_gets_hardened_workload_and_becomes_ready(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("files", env=[{"name": "TOKEN", "value": "x"}]))

    deployment = h.wait_object("Deployment", "files")
    pod = deployment.spec.template.spec
    assert pod.automount_service_account_token is False
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    by_name = {c.name: c for c in pod.containers}
    assert set(by_name) == {"server", "shim"}
    for container in by_name.values():
        context = container.security_context
        assert context.read_only_root_filesystem is True
        assert context.allow_privilege_escalation is False
        assert context.capabilities.drop == ["ALL"]
    assert [e.name for e in by_name["server"].env] == ["TOKEN"]
    assert not by_name["shim"].env
    assert by_name["shim"].readiness_probe.http_get.path == "/readyz"
    assert "corral.dev/config-hash" in deployment.spec.template.metadata.annotations

    service = h.wait_object("Service", "files")
    assert service.spec.ports[0].port == 8484
    policy = h.wait_object("NetworkPolicy", "files")
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    config = h.wait_object("ConfigMap", "files-shim")
    assert '"upstream"' in config.data["config.json"]
    assert "TOKEN" not in config.data["config.json"]
    assert h.read("PodDisruptionBudget", "files") is None
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("MCPServer", "files", True)

    ready = h.wait_condition(SERVERS, "files", "Ready", "True")
    assert ready["reason"] == "AllReplicasReady"
    status = (h.get(SERVERS, "files") or {})["status"]
    assert status["endpoint"] == f"http://files.{h.namespace}.svc:8484/mcp"
    assert status["readyReplicas"] == 1
    assert status["observedGeneration"] == 1
    meta = (h.get(SERVERS, "files") or {})["metadata"]
    assert "corral.dev/operator" not in (meta.get("finalizers") or ()), (
        "no idle timer, no finalizer"
    )
    wait_for("a Ready event", lambda: "Ready" in event_reasons(h, "files"), 30)


def test_spec_change_rolls_pods_with_a_new_hash(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("roll"))
    h.wait_condition(SERVERS, "roll", "Ready", "True")
    before = wait_for(
        "one pod hash", lambda: len(pod_hashes(h, "roll")) == 1 and pod_hashes(h, "roll"), 60
    )

    h.patch(SERVERS, "roll", {"spec": {"env": [{"name": "MODE", "value": "fast"}]}})

    after = wait_for(
        "pods with a new hash",
        lambda: (
            (hashes := pod_hashes(h, "roll")) and hashes != before and len(hashes) == 1 and hashes
        ),
        90,
    )
    assert after.isdisjoint(before)
    wait_for(
        "status for generation 2",
        lambda: ((h.get(SERVERS, "roll") or {}).get("status") or {}).get("observedGeneration") == 2,
        60,
    )


def test_replicas_get_a_disruption_budget(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("many", replicas=2))
    budget = h.wait_object("PodDisruptionBudget", "many")
    assert budget.spec.max_unavailable == 1
    h.patch(SERVERS, "many", {"spec": {"replicas": 1}})
    wait_for("budget removed", lambda: h.read("PodDisruptionBudget", "many") is None, 60)


def test_deleting_a_server_removes_everything_it_owned(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("gone"))
    h.wait_object("Deployment", "gone")
    h.wait_object("ConfigMap", "gone-shim")

    h.delete(SERVERS, "gone")

    for kind, name in (
        ("Deployment", "gone"),
        ("Service", "gone"),
        ("NetworkPolicy", "gone"),
        ("ConfigMap", "gone-shim"),
    ):
        wait_for(f"{kind} {name} collected", lambda k=kind, n=name: h.read(k, n) is None, 90)
    wait_for("server gone", lambda: h.get(SERVERS, "gone") is None, 30)


def test_invalid_catalog_reference_is_reported_without_a_deployment(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, {**server("orphan"), "spec": {"catalogEntry": {"name": "missing"}}})

    valid = h.wait_condition(SERVERS, "orphan", "ConfigValid", "False")

    assert "catalog entry 'missing' not found" in valid["message"]
    assert h.condition(SERVERS, "orphan", "Ready")["reason"] == "InvalidConfig"  # type: ignore[index]
    assert h.read("Deployment", "orphan") is None
