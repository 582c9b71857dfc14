"""The instance managers' no-wait answer (``running``): the shim URL only when the instance is
known to be ready, otherwise None so the router waits in ``ensure_running`` (wake, create)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry
from corral.gateway.instances import AlwaysRunning
from corral.gateway.kubedirectory import KubernetesDirectory, KubernetesInstances, instance_name

NAMESPACE = "team"
ALICE = Principal(user="alice")


def mcpserver(name: str, tenancy: str = "shared", **status: Any) -> dict[str, Any]:
    endpoint = (
        {"endpoint": f"http://{name}.{NAMESPACE}.svc:8080/mcp"} if tenancy == "shared" else {}
    )
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"tenancy": tenancy, "runtime": {"container": {"image": "mcp/server:1"}}},
        "status": {**endpoint, **status},
    }


def ready(reason: str = "Ready", status: str = "True") -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status, "reason": reason}]}


def instance(server: str, user: str, *, is_ready: bool, endpoint: str | None) -> dict[str, Any]:
    status: dict[str, Any] = ready() if is_ready else ready("Starting", "False")
    if endpoint is not None:
        status["endpoint"] = endpoint
    return {
        "metadata": {"name": instance_name(server, user), "namespace": NAMESPACE},
        "spec": {"server": server, "owner": {"username": user}},
        "status": status,
    }


@pytest.fixture
def kube() -> Iterator[tuple[KubernetesDirectory, KubernetesInstances]]:
    """A directory fed by hand as its watch would feed it (no API server is contacted)."""
    with client.ApiClient() as api:
        directory = KubernetesDirectory(api, namespace=NAMESPACE)
        yield directory, KubernetesInstances(api, directory)


def entry(directory: KubernetesDirectory, name: str) -> ServerEntry:
    found = directory.lookup(NAMESPACE, name)
    assert found is not None
    return found


def test_a_static_server_is_always_running() -> None:
    server = ServerEntry(NAMESPACE, "fast", "http://127.0.0.1:9/mcp")
    assert AlwaysRunning().running(server, ALICE) == "http://127.0.0.1:9/mcp"


def test_a_shared_server_runs_unless_asleep_or_starting(
    kube: tuple[KubernetesDirectory, KubernetesInstances],
) -> None:
    directory, instances = kube
    manifests = {
        "awake": mcpserver("awake", **ready()),
        "asleep": mcpserver("asleep", **ready("ScaledToZero", "False")),
        "starting": mcpserver("starting", **ready("Starting", "False")),
        "unknown": mcpserver("unknown"),
    }
    directory._servers_changed({(NAMESPACE, name): m for name, m in manifests.items()})
    running = {name: instances.running(entry(directory, name), ALICE) for name in manifests}
    assert running == {
        "awake": f"http://awake.{NAMESPACE}.svc:8080/mcp",
        "asleep": None,
        "starting": None,
        "unknown": f"http://unknown.{NAMESPACE}.svc:8080/mcp",
    }


def test_a_per_user_instance_runs_once_ready_with_an_endpoint(
    kube: tuple[KubernetesDirectory, KubernetesInstances],
) -> None:
    directory, instances = kube
    directory._servers_changed({(NAMESPACE, "memory"): mcpserver("memory", "perUser")})
    memory = entry(directory, "memory")
    assert instances.running(memory, ALICE) is None
    url = "http://memory-alice.team.svc:8080/mcp"
    for is_ready, endpoint, expected in [
        (False, url, None),
        (True, None, None),
        (True, url, url),
    ]:
        manifest = instance("memory", "alice", is_ready=is_ready, endpoint=endpoint)
        key = (NAMESPACE, manifest["metadata"]["name"])
        directory._instances_changed({key: manifest})
        assert instances.running(memory, ALICE) == expected
    assert instances.running(memory, Principal(user="bob")) is None
