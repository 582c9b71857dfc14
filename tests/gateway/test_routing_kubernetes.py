"""Discovery from a real Kubernetes API server: the gateway routes to an MCPServer once the
operator publishes its shim endpoint, applies AccessPolicies for the early 403, and forgets a
deleted server. The shim and server-everything are real; the status is patched as the operator
would patch it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from corral.api.kinds import KINDS
from corral.api.policy import Caller
from corral.gateway.directory import ServerEntry
from corral.gateway.kubedirectory import (
    GROUP,
    VERSION,
    KubernetesDirectory,
    KubernetesInstances,
    instance_name,
    server_entry,
)
from e2e.cluster.launcher import Cluster
from tests.fixtures.gateway import ApiKeyMaker, GatewayFactory, on_both_fronts
from tests.fixtures.mcp_client import mcp_session
from tests.fixtures.shim import ShimHandle, run_corral
from tests.gateway.test_gateway_command import write_config

pytest_generate_tests = on_both_fronts

pytestmark = pytest.mark.cluster

ShimFactory = Callable[..., ShimHandle]
CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
SERVER = "everything"


@pytest.fixture(scope="module")
def crds_installed(k8s_cluster: Cluster) -> Cluster:
    k8s_cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=corral-tests",
        "-f", str(CRDS_DIR),
    )  # fmt: skip
    k8s_cluster.wait_established([kind.crd_name for kind in KINDS], 120)
    return k8s_cluster


@pytest.fixture
def kube(crds_installed: Cluster) -> Iterator[tuple[client.ApiClient, str]]:
    """An API client and a fresh namespace (deleted afterwards without waiting)."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    with crds_installed.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        yield api, name
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


def policy(namespace: str, group: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{group}-all", "namespace": namespace},
        "spec": {
            "subjects": [{"group": group}],
            "targets": {"servers": [SERVER]},
            "rules": [{"name": "all", "effect": "Allow", "methods": ["*"]}],
        },
    }


async def eventually(check: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait until ``check()`` holds (the watch delivers asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "the watch did not deliver the change in time"
        await asyncio.sleep(0.05)


async def test_servers_and_policies_come_from_the_cluster(
    kube: tuple[client.ApiClient, str],
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    api, namespace = kube
    custom = client.CustomObjectsApi(api)
    shim = shim_factory(
        everything_http,
        server={"namespace": namespace, "name": SERVER},
        policies=[policy(namespace, "dev")],
    )
    directory = KubernetesDirectory(api, namespace=namespace, retry_delay=0.2, watch_timeout=30)
    directory.start()
    try:
        assert await asyncio.to_thread(directory.wait_synced, 60.0)
        server = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MCPServer",
            "metadata": {"name": SERVER, "namespace": namespace, "labels": {"tier": "test"}},
            "spec": {"runtime": {"remote": {"url": "https://mcp.example.com/mcp"}}},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "mcpservers", server)
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "accesspolicies", policy(namespace, "dev")
        )
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "mcpservers", SERVER, {"status": {"endpoint": shim.url}}
        )
        await eventually(lambda: directory.lookup(namespace, SERVER) is not None)
        entry = directory.lookup(namespace, SERVER)
        assert entry is not None
        assert dict(entry.labels) == {"tier": "test"}

        gateway = await gateway_factory(shim, directory=directory)
        url = gateway.mcp_url(namespace, SERVER)
        developer, _ = await api_key("dana", groups=("dev",))
        outsider, _ = await api_key("olga", groups=("ops",))
        async with mcp_session(url, headers={"Authorization": f"Bearer {developer}"}) as session:
            echoed = await session.call_tool("echo", {"message": "from the cluster"})
            assert echoed.content[0].text == "Echo: from the cluster"  # type: ignore[union-attr]
        assert await status(url, outsider) == 403

        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "accesspolicies", "dev-all"
        )
        dana = Caller("dana", groups=frozenset({"dev"}))
        await eventually(lambda: not _decided_allowed(directory, dana, entry))
        assert await status(url, developer) == 403

        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "mcpservers", SERVER)
        await eventually(lambda: directory.lookup(namespace, SERVER) is None)
        assert await status(url, developer) == 404
    finally:
        await asyncio.to_thread(directory.stop)


async def test_corral_gateway_watches_the_cluster_when_configured(
    kube: tuple[client.ApiClient, str],
    crds_installed: Cluster,
    shim_factory: ShimFactory,
    everything_http: str,
    postgres_dsn: str,
    api_key: ApiKeyMaker,
    log_dir: Path,
) -> None:
    api, namespace = kube
    custom = client.CustomObjectsApi(api)
    shim = shim_factory(
        everything_http,
        server={"namespace": namespace, "name": SERVER},
        policies=[policy(namespace, "dev")],
    )
    server = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPServer",
        "metadata": {"name": SERVER, "namespace": namespace},
        "spec": {"runtime": {"remote": {"url": "https://mcp.example.com/mcp"}}},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "mcpservers", server)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "mcpservers", SERVER, {"status": {"endpoint": shim.url}}
    )
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "accesspolicies", policy(namespace, "dev")
    )
    discovery = {
        "kind": "kubernetes",
        "namespace": namespace,
        "kubeconfig": str(crds_installed.kubeconfig),
    }
    config_path = write_config(log_dir, shim, postgres_dsn, discovery=discovery, servers=[])

    def argv(port: int) -> list[str]:
        config = orjson.loads(config_path.read_bytes())
        config["listen"] = {"host": "127.0.0.1", "port": port}
        config_path.write_bytes(orjson.dumps(config))
        return ["gateway", "--config", str(config_path)]

    process, port = run_corral("gateway", argv, log_dir)
    try:
        token, _ = await api_key()
        url = f"http://127.0.0.1:{port}/mcp/{namespace}/{SERVER}"
        async with mcp_session(url, headers={"Authorization": f"Bearer {token}"}) as session:
            echoed = await session.call_tool("echo", {"message": "watched"})
            assert echoed.content[0].text == "Echo: watched"  # type: ignore[union-attr]
    finally:
        process.stop()


def per_user_server(namespace: str, name: str, startup_timeout: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": {"container": {"image": "example/everything:1", "port": 3001}},
            "tenancy": "perUser",
            "startupTimeout": startup_timeout,
        },
    }


async def stand_in_operator(
    custom: client.CustomObjectsApi,
    directory: KubernetesDirectory,
    namespace: str,
    name: str,
    url: str,
) -> None:
    """Do what the operator does once an instance exists: run it and report it Ready."""
    await eventually(lambda: directory.instance(namespace, name) is not None)
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {"status": {"endpoint": url, "readyReplicas": 1, "conditions": [ready]}}
    await asyncio.to_thread(
        custom.patch_namespaced_custom_object_status,
        GROUP, VERSION, namespace, "mcpserverinstances", name, status,
    )  # fmt: skip


async def test_a_per_user_server_gets_an_instance_on_first_use(
    kube: tuple[client.ApiClient, str],
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    api, namespace = kube
    custom = client.CustomObjectsApi(api)
    shim = shim_factory(
        everything_http,
        server={"namespace": namespace, "name": SERVER},
        policies=[policy(namespace, "dev")],
    )
    for name, timeout in ((SERVER, "120s"), ("slow", "1s")):
        manifest = per_user_server(namespace, name, timeout)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "mcpservers", manifest)
    slow_policy = {**policy(namespace, "dev"), "metadata": {"name": "slow", "namespace": namespace}}
    slow_policy["spec"] = {**slow_policy["spec"], "targets": {"servers": ["slow"]}}
    for item in (policy(namespace, "dev"), slow_policy):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "accesspolicies", item)
    directory = KubernetesDirectory(api, namespace=namespace, retry_delay=0.2, watch_timeout=30)
    directory.start()
    instances = KubernetesInstances(api, directory)
    try:
        await eventually(
            lambda: (
                directory.lookup(namespace, SERVER) is not None
                and directory.lookup(namespace, "slow") is not None
            )
        )
        gateway = await gateway_factory(shim, directory=directory, instances=instances)
        token, _ = await api_key("alice", groups=("dev",))
        name = instance_name(SERVER, "alice")
        operator = asyncio.create_task(
            stand_in_operator(custom, directory, namespace, name, shim.url)
        )
        url = gateway.mcp_url(namespace, SERVER)
        async with mcp_session(url, headers={"Authorization": f"Bearer {token}"}) as session:
            echoed = await session.call_tool("echo", {"message": "my own instance"})
            assert echoed.content[0].text == "Echo: my own instance"  # type: ignore[union-attr]
        await operator
        created = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "mcpserverinstances", name
        )
        assert created["spec"] == {"server": SERVER, "owner": {"username": "alice"}}
        assert created["metadata"]["labels"] == {"corral.dev/server": SERVER}

        message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(gateway.mcp_url(namespace, "slow"), json=message, headers=headers) as reply,
        ):
            assert reply.status == 503
            assert int(reply.headers["Retry-After"]) >= 1
        assert directory.instance(namespace, instance_name("slow", "alice")) is not None
    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)


def _decided_allowed(directory: KubernetesDirectory, caller: Caller, entry: ServerEntry) -> bool:
    decision = directory.may_access(caller, entry)
    return decision is not None and decision.allowed


async def status(url: str, token: str) -> int:
    message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=headers) as r:
        return r.status


def test_a_shared_server_is_routable_once_its_shim_endpoint_is_published() -> None:
    manifest: dict[str, Any] = {
        "metadata": {"name": "github", "namespace": "team-a", "labels": {"tier": "prod"}},
        "spec": {"catalogEntry": {"name": "github"}, "startupTimeout": "2m"},
        "status": {},
    }
    assert server_entry(manifest) is None
    manifest["status"] = {"endpoint": "http://github.team-a.svc:8080/mcp"}
    entry = server_entry(manifest)
    assert entry is not None
    assert (entry.route, entry.shim_url, entry.tenancy) == (
        "team-a/github",
        "http://github.team-a.svc:8080/mcp",
        "shared",
    )
    assert (entry.catalog_entry, entry.startup_timeout, dict(entry.labels)) == (
        "github",
        120.0,
        {"tier": "prod"},
    )
    per_user = {**manifest, "spec": {"tenancy": "perUser"}, "status": {}}
    routed = server_entry(per_user)
    assert routed is not None
    assert (routed.tenancy, routed.shim_url, routed.startup_timeout) == ("perUser", "", 60.0)


def test_instance_names_are_stable_per_user_and_fit_a_server_name() -> None:
    first = instance_name("memory", "alice@example.com")
    assert first == instance_name("memory", "alice@example.com")
    assert first != instance_name("memory", "bob@example.com")
    long_name = instance_name("m" * 50, "alice")
    assert len(long_name) <= 50
    assert long_name.startswith("m" * 37 + "-")
