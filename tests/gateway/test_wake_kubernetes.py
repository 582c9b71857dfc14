"""Ensure-running and activity on a real API server: a call wakes a shared server the operator
scaled to zero (annotation, operator scales up, KWOK makes the pod Ready, the gateway waits),
a server that stays asleep past its ``startupTimeout`` answers 503 with ``Retry-After``, and
calls leave ``lastActivity`` and the listed tools on the status of the MCPServer or of the
caller's MCPServerInstance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from corral.common.assertion import public_jwk
from corral.gateway.kubedirectory import (
    GROUP,
    VERSION,
    WAKE_ANNOTATION,
    KubernetesDirectory,
    KubernetesInstances,
    instance_name,
)
from corral.mcp import jsonrpc
from tests.fixtures.gateway import ApiKeyMaker, GatewayFactory
from tests.fixtures.mcp_client import mcp_session
from tests.fixtures.operator import OperatorHarness
from tests.fixtures.shim import ISSUER, ShimHandle
from tests.gateway.test_routing_kubernetes import eventually, stand_in_operator
from tests.operator.test_references_cluster import event_reasons
from tests.operator.test_servers_cluster import SERVERS, server

pytestmark = pytest.mark.cluster

ShimFactory = Callable[..., ShimHandle]
SLEEPY = "sleepy"


def ready_condition(status: str, reason: str) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def allow_dev(namespace: str, *servers: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessPolicy",
        "metadata": {"name": "dev-all", "namespace": namespace},
        "spec": {
            "subjects": [{"group": "dev"}],
            "targets": {"servers": list(servers)},
            "rules": [{"name": "all", "effect": "Allow", "methods": ["*"]}],
        },
    }


async def ping(url: str, token: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=headers) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return r.status, dict(r.headers), body


async def watching(h: OperatorHarness) -> KubernetesDirectory:
    directory = KubernetesDirectory(h.api, namespace=h.namespace, retry_delay=0.2, watch_timeout=30)
    directory.start()
    assert await asyncio.to_thread(directory.wait_synced, 60.0)
    return directory


async def test_a_call_wakes_a_shared_server_scaled_to_zero(
    operator_harness: OperatorHarness,
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server(SLEEPY, idleTimeout=3, startupTimeout="120s"))
    h.create("accesspolicies", allow_dev(h.namespace, SLEEPY))
    shim = shim_factory(everything_http, server={"namespace": h.namespace, "name": SLEEPY})
    directory = await watching(h)
    instances = KubernetesInstances(h.api, directory, activity_interval=0.2)
    try:
        await eventually(
            lambda: (state := directory.state(h.namespace, SLEEPY)) is not None and state.asleep,
            120,
        )
        spec_before = (h.get(SERVERS, SLEEPY) or {})["spec"]
        assert WAKE_ANNOTATION not in (
            (h.get(SERVERS, SLEEPY) or {})["metadata"].get("annotations") or {}
        )
        gateway = await gateway_factory(shim, directory=directory, instances=instances)
        token, _ = await api_key("alice", groups=("dev",))

        status, _, body = await ping(gateway.mcp_url(h.namespace, SLEEPY), token)

        woken = h.get(SERVERS, SLEEPY) or {}
        assert WAKE_ANNOTATION in woken["metadata"]["annotations"]
        assert woken["spec"] == spec_before
        assert "Woken" in event_reasons(h, SLEEPY)
        # The gateway forwards only once its watch sees Ready (else it would answer 503 after
        # startupTimeout). The operator's endpoint is a Service name, which does not resolve
        # in this test bed, so the forwarded call ends in 502.
        assert status == 502, body
        assert "unreachable" in body["error"]["message"]
    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)


async def test_a_server_that_stays_asleep_answers_503_with_retry_after(
    operator_harness: OperatorHarness,
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    h = operator_harness
    h.create(SERVERS, server(SLEEPY, idleTimeout=3, startupTimeout="1s"))
    h.create("accesspolicies", allow_dev(h.namespace, SLEEPY))
    shim = shim_factory(everything_http, server={"namespace": h.namespace, "name": SLEEPY})
    h.patch_status(
        SERVERS,
        SLEEPY,
        {
            "endpoint": shim.url,
            "readyReplicas": 0,
            "conditions": [ready_condition("False", "ScaledToZero")],
        },
    )
    directory = await watching(h)
    instances = KubernetesInstances(h.api, directory, activity_interval=0.2)
    try:
        await eventually(lambda: directory.lookup(h.namespace, SLEEPY) is not None)
        gateway = await gateway_factory(shim, directory=directory, instances=instances)
        token, _ = await api_key("alice", groups=("dev",))

        status, headers, body = await ping(gateway.mcp_url(h.namespace, SLEEPY), token)

        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == jsonrpc.UPSTREAM_UNAVAILABLE
        message = body["error"]["message"]
        assert f"{h.namespace}/{SLEEPY}" in message
        assert "did not become ready in 1s" in message
        annotations = (h.get(SERVERS, SLEEPY) or {})["metadata"]["annotations"]
        assert WAKE_ANNOTATION in annotations

    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)


async def test_a_session_on_a_server_scaled_to_zero_is_unknown(
    operator_harness: OperatorHarness,
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    h = operator_harness
    h.create(SERVERS, server(SLEEPY, idleTimeout=3, startupTimeout="1s"))
    h.create("accesspolicies", allow_dev(h.namespace, SLEEPY))
    shim = shim_factory(
        everything_http,
        server={"namespace": h.namespace, "name": SLEEPY},
        policies=[allow_dev(h.namespace, SLEEPY)],
    )
    running = {
        "endpoint": shim.url,
        "readyReplicas": 1,
        "conditions": [ready_condition("True", "AllReplicasReady")],
    }
    h.patch_status(SERVERS, SLEEPY, running)
    directory = await watching(h)
    instances = KubernetesInstances(h.api, directory, activity_interval=0.2)
    try:
        await eventually(lambda: getattr(directory.state(h.namespace, SLEEPY), "ready", False))
        gateway = await gateway_factory(shim, directory=directory, instances=instances)
        token, _ = await api_key("alice", groups=("dev",))
        url = gateway.mcp_url(h.namespace, SLEEPY)
        session_id = await initialize(url, token)
        assert await ping_in_session(url, token, session_id) == 200

        asleep = [ready_condition("False", "ScaledToZero")]
        h.patch_status(SERVERS, SLEEPY, {"readyReplicas": 0, "conditions": asleep})
        await eventually(lambda: getattr(directory.state(h.namespace, SLEEPY), "asleep", False))

        assert await ping_in_session(url, token, session_id) == 404
    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)


MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


async def initialize(url: str, token: str) -> str:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "wake-test", "version": "1"},
        },
    }
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=headers) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["Mcp-Session-Id"]


async def ping_in_session(url: str, token: str, session_id: str) -> int:
    message = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": session_id}
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=headers) as r:
        await r.read()
        return r.status


async def test_calls_record_last_activity_and_tools_on_the_status(
    operator_harness: OperatorHarness,
    shim_factory: ShimFactory,
    everything_http: str,
    gateway_factory: GatewayFactory,
    api_key: ApiKeyMaker,
) -> None:
    h = operator_harness
    custom = client.CustomObjectsApi(h.api)
    name = "everything"
    remote = {"remote": {"url": "https://mcp.example.com/mcp"}}
    h.create(SERVERS, server(name, runtime=remote))
    h.create(SERVERS, server("notes", tenancy="perUser"))
    h.create("accesspolicies", allow_dev(h.namespace, name, "notes"))
    shim = shim_factory(
        everything_http,
        server={"namespace": h.namespace, "name": name},
        policies=[allow_dev(h.namespace, name, "notes")],
    )
    h.patch_status(
        SERVERS,
        name,
        {
            "endpoint": shim.url,
            "readyReplicas": 1,
            "conditions": [ready_condition("True", "AllReplicasReady")],
        },
    )
    directory = await watching(h)
    instances = KubernetesInstances(h.api, directory, activity_interval=0.2)
    try:
        await eventually(
            lambda: (
                directory.lookup(h.namespace, name) is not None
                and directory.lookup(h.namespace, "notes") is not None
            )
        )
        gateway = await gateway_factory(shim, directory=directory, instances=instances)
        token, _ = await api_key("alice", groups=("dev",))
        headers = {"Authorization": f"Bearer {token}"}
        async with mcp_session(gateway.mcp_url(h.namespace, name), headers=headers) as session:
            listed = await session.list_tools()
            await session.call_tool("echo", {"message": "busy"})
        names = sorted(tool.name for tool in listed.tools)
        assert "echo" in names

        def recorded() -> dict[str, Any]:
            return (h.get(SERVERS, name) or {}).get("status") or {}

        await eventually(lambda: "tools" in recorded() and "lastActivity" in recorded())
        status = recorded()
        assert (status["tools"], status["toolCount"]) == (names, len(names))
        assert status["endpoint"] == shim.url
        assert status["conditions"][0]["reason"] == "AllReplicasReady"

        instance = instance_name("notes", "alice")
        notes_shim = shim_factory(
            everything_http,
            server={"namespace": h.namespace, "name": "notes"},
            identity={"issuer": ISSUER, "jwks": [public_jwk(shim.key)]},
            policies=[allow_dev(h.namespace, name, "notes")],
        )
        operator = asyncio.create_task(
            stand_in_operator(custom, directory, h.namespace, instance, notes_shim.url)
        )
        async with mcp_session(gateway.mcp_url(h.namespace, "notes"), headers=headers) as session:
            await session.call_tool("echo", {"message": "mine"})
            await session.list_tools()
        await operator

        def instance_status() -> dict[str, Any]:
            found = custom.get_namespaced_custom_object(
                GROUP, VERSION, h.namespace, "mcpserverinstances", instance
            )
            return found.get("status") or {}

        await eventually(lambda: "lastActivity" in instance_status())
        assert instance_status()["endpoint"] == notes_shim.url
        assert "tools" not in instance_status()
        await eventually(lambda: "tools" in ((h.get(SERVERS, "notes") or {}).get("status") or {}))
        notes = (h.get(SERVERS, "notes") or {})["status"]
        assert (notes["tools"], notes["toolCount"]) == (names, len(names))
    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)
