"""Corral end to end on the local control plane: the chart's CRDs and RBAC installed, the operator
and the gateway running under the chart's service accounts, server pods run by the pod runner,
and the official SDK client going through the gateway to server-everything and mcp-server-time.

Stand-ins (documented in docs/install.md, "Testing"): KWOK nodes run no containers, so
`tests/e2e/podrunner.py` runs each pod's containers as local processes. Service names do not
resolve here, so one gateway watches the cluster (discovery, early policy checks, perUser
instances) and a second one reaches the shims at the pod runner's local addresses (its static
`servers` list) for the client's calls.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from mcp.shared.exceptions import MCPError

from corral.gateway import kubedirectory
from e2e.cluster.launcher import Cluster
from e2e.cluster.waiting import wait_for
from tests.e2e.harness import GROUP, VERSION, WAIT, Stage, User, manifest, stage_lifetime
from tests.e2e.podrunner import PodRunner
from tests.fixtures.mcp_client import mcp_session
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(900)]

ALICE = User("alice@example.com", ("engineering",))
BOB = User("bob@example.com", ("contractors",))
POLICY = {
    "subjects": [{"group": "engineering"}],
    "targets": {"servers": ["everything", "time", "memory"]},
    "rules": [
        {"name": "use-all", "effect": "Allow", "methods": ["*"]},
        {"name": "no-env", "effect": "Deny", "methods": ["tools/call"], "tools": ["get-env"]},
    ],
}
SERVERS = {
    "everything": {
        "runtime": {
            "npx": {"package": "@modelcontextprotocol/server-everything", "args": ["stdio"]}
        },
        "audit": {"payloads": "metadata"},
    },
    "time": {
        "runtime": {"uvx": {"package": "mcp-server-time", "args": ["--local-timezone", "UTC"]}}
    },
    "memory": {
        "runtime": {"npx": {"package": "@modelcontextprotocol/server-memory"}},
        "tenancy": "perUser",
        "env": [{"name": "MEMORY_FILE_PATH", "value": "/tmp/memory.json"}],
    },
}


@dataclass
class Running:
    stage: Stage
    runner: PodRunner
    api: client.ApiClient
    discovering: str
    """The URL of a second gateway that finds servers by watching the API server."""

    def mcp_url(self, server: str) -> str:
        return f"{self.stage.gateway_mcp_url}/mcp/{self.stage.namespace}/{server}"


@pytest.fixture(scope="module")
def stage(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    yield from stage_lifetime(Stage(k8s_cluster, tmp_path_factory.mktemp("e2e")))


@pytest.fixture(scope="module")
def running(stage: Stage, postgres_server: PostgresServer) -> Iterator[Running]:
    database = f"e2e_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(database)
    with stage.cluster.api_client() as api:
        stage.start_operator()
        stage.create(api, "accesspolicies", manifest("AccessPolicy", "engineers", POLICY))
        for name, spec in SERVERS.items():
            stage.create(api, "mcpservers", manifest("MCPServer", name, spec))
        with PodRunner(api, stage.namespace, stage.workdir / "pods") as runner:
            servers = [
                {"namespace": stage.namespace, "name": name, "url": stage.wait_shim(runner, name)}
                for name in ("everything", "time")
            ]
            config = stage.gateway_config(postgres_server.dsn(database), servers, [ALICE, BOB])
            stage.start_gateway(config)
            discovering = stage.start_gateway(
                stage.discovering_gateway_config(postgres_server.dsn(database), [ALICE, BOB]),
                name="gateway-discovering",
            )
            yield Running(stage, runner, api, discovering)
            stage.stop()
    postgres_server.drop_database(database)


def _can(stage: Stage, component: str, verb: str, resource: str) -> bool:
    kubeconfig = stage.workdir / f"{component}.kubeconfig"
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = subprocess.run(
        [str(stage.cluster.kubectl), f"--kubeconfig={kubeconfig}", "auth", "can-i", verb,
         resource, *extra, "-n", stage.namespace],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return result.stdout.strip() == "yes"


def test_operator_and_gateway_hold_only_the_charts_permissions(running: Running) -> None:
    stage = running.stage
    assert _can(stage, "operator", "patch", "deployments.apps")
    assert _can(stage, "operator", "delete", "mcpserverinstances.corral.dev")
    assert not _can(stage, "operator", "get", "secrets")
    assert not _can(stage, "operator", "create", "mcpservers.corral.dev")
    assert _can(stage, "gateway", "watch", "mcpservers.corral.dev")
    assert _can(stage, "gateway", "create", "mcpserverinstances.corral.dev")
    assert _can(stage, "gateway", "patch", "mcpserverinstances.corral.dev/status")
    assert _can(stage, "gateway", "patch", "mcpservers.corral.dev/status")
    assert _can(stage, "gateway", "patch", "mcpservers.corral.dev"), "the wake annotation"
    assert not _can(stage, "gateway", "update", "mcpservers.corral.dev")
    assert not _can(stage, "gateway", "create", "mcpservers.corral.dev")
    assert not _can(stage, "gateway", "delete", "mcpservers.corral.dev")
    assert not _can(stage, "gateway", "delete", "mcpserverinstances.corral.dev")
    assert not _can(stage, "gateway", "get", "secrets")
    assert not _can(stage, "gateway", "get", "pods")


def _condition(api: client.ApiClient, stage: Stage, name: str, kind: str) -> dict[str, Any]:
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, stage.namespace, "mcpservers", name
    )
    conditions = (found.get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c["type"] == kind), {})


def test_servers_become_ready_restricted_pods(running: Running) -> None:
    stage, api = running.stage, running.api
    for name in ("everything", "time"):
        ready = wait_for(
            f"{name} Ready",
            lambda n=name: _condition(api, stage, n, "Ready").get("status") == "True",
            WAIT,
        )
        assert ready
        pods = client.CoreV1Api(api).list_namespaced_pod(
            stage.namespace, label_selector=f"corral.dev/workload={name}"
        )
        assert pods.items, "the namespace enforces restricted, so its pods passed admission"
        assert running.runner.pods(name)


async def test_client_calls_tools_through_the_gateway(running: Running) -> None:
    async with mcp_session(running.mcp_url("everything"), headers=ALICE.headers) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert "echo" in tools
        assert "get-env" not in tools, "list results show only what the caller may use"
        result = await session.call_tool("echo", {"message": "through the gateway"})
        assert not result.is_error
        assert "through the gateway" in orjson.dumps(result.model_dump(mode="json")).decode()
    async with mcp_session(running.mcp_url("time"), headers=ALICE.headers) as session:
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert "UTC" in orjson.dumps(result.model_dump(mode="json")).decode()


async def _denial(url: str, user: User, tool: str, arguments: dict[str, Any]) -> str:
    async with mcp_session(url, headers=user.headers) as session:
        try:
            result = await session.call_tool(tool, arguments)
        except MCPError as error:
            return str(error)
    assert result.is_error, f"{user.name} was allowed to call {tool}"
    return orjson.dumps(result.model_dump(mode="json")).decode()


async def test_access_policy_denies_and_the_audit_api_shows_it(running: Running) -> None:
    message = await _denial(running.mcp_url("everything"), ALICE, "get-env", {})
    assert "engineers" in message
    assert "no-env" in message
    with pytest.raises(Exception):  # noqa: B017,PT011 - no policy admits bob: any refusal
        await _denial(running.mcp_url("everything"), BOB, "echo", {"message": "hi"})

    def denials() -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"server": "everything", "target": "get-env"})
        request = urllib.request.Request(
            f"{running.stage.gateway_url}/api/audit?{query}", headers=ALICE.headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            found: list[dict[str, Any]] = orjson.loads(response.read())["events"]
        return found

    found = wait_for("the denial in the audit API", denials, WAIT)
    event = found[0]
    assert event["decision"]["allowed"] is False, event
    assert event["decision"]["rule"] == "no-env"
    assert event["user"] == ALICE.name, event


def _audit_events(running: Running, user: User, **filters: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode(filters)
    request = urllib.request.Request(
        f"{running.stage.gateway_url}/api/audit?{query}", headers=user.headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        found: list[dict[str, Any]] = orjson.loads(response.read())["events"]
    return found


async def test_both_shims_audit_with_the_namespaces_one_token(running: Running) -> None:
    async with mcp_session(running.mcp_url("everything"), headers=ALICE.headers) as session:
        assert not (await session.call_tool("echo", {"message": "audited"})).is_error
    async with mcp_session(running.mcp_url("time"), headers=ALICE.headers) as session:
        assert not (await session.call_tool("get_current_time", {"timezone": "UTC"})).is_error
    for server, tool in (("everything", "echo"), ("time", "get_current_time")):
        found = wait_for(
            f"{server}'s audit event for {tool}",
            lambda s=server, t=tool: _audit_events(running, ALICE, server=s, target=t),
            WAIT,
        )
        assert found[0]["namespace"] == running.stage.namespace
        assert found[0]["user"] == ALICE.name


def test_a_per_user_instance_runs_when_the_gateway_account_creates_it(running: Running) -> None:
    stage = running.stage
    name = f"memory-alice-{uuid.uuid4().hex[:6]}"
    instance = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPServerInstance",
        "metadata": {"name": name, "namespace": stage.namespace},
        "spec": {"server": "memory", "owner": {"username": ALICE.name, "email": ALICE.name}},
    }
    kubeconfig = stage.workdir / "gateway.kubeconfig"
    subprocess.run(
        [str(stage.cluster.kubectl), f"--kubeconfig={kubeconfig}", "create", "-f", "-"],
        input=orjson.dumps(instance).decode(), text=True, check=True, timeout=60,
    )  # fmt: skip
    assert stage.wait_shim(running.runner, name)


def _status(url: str, user: User, timeout: float = 120.0) -> int:
    """The HTTP status of an MCP initialize request to `url` as `user`."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"},
        },
    }
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={
            **user.headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status


UNREACHABLE_HERE = (502, 503, 504)
"""Statuses of a request routed to a shim's in-cluster Service URL, which this machine cannot
resolve (the pod runner is no cluster DNS)."""


def test_gateway_discovers_servers_and_policies_under_its_account(running: Running) -> None:
    base, namespace = running.discovering, running.stage.namespace
    assert _status(f"{base}/mcp/{namespace}/nothing-here", ALICE) == 404
    assert _status(f"{base}/mcp/{namespace}/everything", BOB) == 403, "no policy admits bob"
    assert _status(f"{base}/mcp/{namespace}/everything", ALICE) in UNREACHABLE_HERE


def test_gateway_creates_a_per_user_instance_on_first_call(running: Running) -> None:
    stage, namespace = running.stage, running.stage.namespace
    custom = client.CustomObjectsApi(running.api)
    name = kubedirectory.instance_name("memory", ALICE.name)

    def instance() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "mcpserverinstances", name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    assert instance() is None
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(_status, f"{running.discovering}/mcp/{namespace}/memory", ALICE)
        created = wait_for("the gateway's MCPServerInstance", instance, WAIT)
        assert created["spec"]["owner"]["username"] == ALICE.name
        assert stage.wait_shim(running.runner, name), "the operator runs the instance"
        assert call.result(timeout=WAIT) in UNREACHABLE_HERE


def _gone(read: Any, name: str, namespace: str) -> bool:
    try:
        read(name, namespace)
    except ApiException as error:
        return error.status == 404
    return False


async def test_deleting_the_server_takes_everything_away(running: Running) -> None:
    stage, api = running.stage, running.api
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, stage.namespace, "mcpservers", "everything"
    )
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    networking = client.NetworkingV1Api(api)
    readers = {
        "Deployment": apps.read_namespaced_deployment,
        "Service": core.read_namespaced_service,
        "ConfigMap": core.read_namespaced_config_map,
        "NetworkPolicy": networking.read_namespaced_network_policy,
    }
    names = {"ConfigMap": "everything-shim"}
    for kind, read in readers.items():
        assert wait_for(
            f"{kind} gone",
            lambda r=read, k=kind: _gone(r, names.get(k, "everything"), stage.namespace),
            WAIT,
        )
    assert wait_for("pods stopped", lambda: not running.runner.pods("everything"), WAIT)
    route = f"{running.discovering}/mcp/{stage.namespace}/everything"
    assert wait_for("route gone", lambda: _status(route, ALICE) == 404, WAIT)
    with pytest.raises(Exception):  # noqa: B017,PT011 - nothing serves it any more
        async with mcp_session(running.mcp_url("everything"), headers=ALICE.headers) as session:
            await session.call_tool("echo", {"message": "still there?"})
