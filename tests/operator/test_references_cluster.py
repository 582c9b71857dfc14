"""Catalog entries, access policies, idleness and per-user instances on a real API server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.cluster.waiting import wait_for
from tests.fixtures.operator import OperatorHarness
from tests.operator.test_servers_cluster import SERVERS, server

pytestmark = pytest.mark.cluster

ENTRIES, POLICIES, INSTANCES = "mcpcatalogentries", "accesspolicies", "mcpserverinstances"


def entry(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "MCPCatalogEntry",
        "metadata": {"name": name},
        "spec": {
            "title": "Example",
            "runtime": {"container": {"image": image, "port": 3000}},
            "defaults": {"tools": {"deny": ["admin_*"]}},
        },
    }


def access_policy(name: str, targets: dict[str, Any], when: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"effect": "Allow", "methods": ["tools/call"], "tools": ["*"]}
    if when is not None:
        rule["when"] = when
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {"subjects": [{"group": "dev"}], "targets": targets, "rules": [rule]},
    }


def shim_config(h: OperatorHarness, name: str) -> tuple[str, dict[str, Any]]:
    config_map = h.wait_object("ConfigMap", f"{name}-shim")
    return config_map.metadata.resource_version, json.loads(config_map.data["config.json"])


def policy_names(h: OperatorHarness, name: str) -> list[str]:
    return [p["metadata"]["name"] for p in shim_config(h, name)[1]["policies"]]


def event_reasons(h: OperatorHarness, name: str) -> set[str]:
    events = h.core.list_namespaced_event(
        h.namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return {e.reason for e in events}


def server_image(h: OperatorHarness, name: str) -> str | None:
    deployment = h.read("Deployment", name)
    if deployment is None:
        return None
    containers = {c.name: c for c in deployment.spec.template.spec.containers}
    return str(containers["server"].image)


def test_catalog_entry_runs_its_servers_and_counts_them(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(ENTRIES, entry("memory", "ghcr.io/example/memory:1"))
    for name in ("mem-a", "mem-b"):
        h.create(SERVERS, {**server(name), "spec": {"catalogEntry": {"name": "memory"}}})

    wait_for(
        "servers from the entry", lambda: server_image(h, "mem-b") == "ghcr.io/example/memory:1", 60
    )
    assert shim_config(h, "mem-a")[1]["tools"] == {"deny": ["admin_*"]}
    wait_for(
        "entry counts its servers",
        lambda: ((h.get(ENTRIES, "memory") or {}).get("status") or {}).get("servers") == 2,
        60,
    )

    h.patch(
        ENTRIES,
        "memory",
        {"spec": {"runtime": {"container": {"image": "ghcr.io/example/memory:2", "port": 3000}}}},
    )

    for name in ("mem-a", "mem-b"):
        wait_for(
            f"{name} re-rendered",
            lambda n=name: server_image(h, n) == "ghcr.io/example/memory:2",
            60,
        )

    h.delete(SERVERS, "mem-b")
    wait_for(
        "entry counts the remaining server",
        lambda: ((h.get(ENTRIES, "memory") or {}).get("status") or {}).get("servers") == 1,
        60,
    )


def test_policy_change_updates_only_affected_shim_configs(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("alpha"))
    h.create(SERVERS, {**server("beta"), "metadata": {"name": "beta", "labels": {"tier": "prod"}}})
    h.wait_condition(SERVERS, "alpha", "Ready", "True")
    h.wait_condition(SERVERS, "beta", "Ready", "True")
    alpha_version, _ = shim_config(h, "alpha")

    h.create(
        POLICIES, access_policy("prod-only", {"serverSelector": {"matchLabels": {"tier": "prod"}}})
    )

    wait_for("beta gets the policy", lambda: policy_names(h, "beta") == ["prod-only"], 60)
    h.wait_condition(POLICIES, "prod-only", "ConfigValid", "True")
    assert shim_config(h, "alpha") == (alpha_version, shim_config(h, "alpha")[1])
    assert policy_names(h, "alpha") == []

    h.patch(
        POLICIES, "prod-only", {"spec": {"targets": {"servers": ["alpha"], "serverSelector": None}}}
    )

    wait_for("alpha gets the policy", lambda: policy_names(h, "alpha") == ["prod-only"], 60)
    wait_for("beta loses the policy", lambda: policy_names(h, "beta") == [], 60)
    beta_hash = h.read("Deployment", "beta").spec.template.metadata.annotations  # type: ignore[union-attr]
    assert "corral.dev/config-hash" in beta_hash


def test_invalid_policy_is_reported_and_left_out(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("gamma"))
    h.create(POLICIES, access_policy("broken", {"servers": ["gamma"]}, when="user.groups.exists("))

    valid = h.wait_condition(POLICIES, "broken", "ConfigValid", "False")

    assert "rule 0" in valid["message"]
    h.wait_condition(SERVERS, "gamma", "ConfigValid", "True")
    assert policy_names(h, "gamma") == []


def test_idle_shared_server_scales_to_zero_and_wakes(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("sleepy", idleTimeout=6))

    ready = h.wait_condition(SERVERS, "sleepy", "Ready", "False", timeout=60)
    wait_for(
        "scaled to zero",
        lambda: (h.condition(SERVERS, "sleepy", "Ready") or {}).get("reason") == "ScaledToZero",
        60,
    )
    assert ready is not None
    assert h.read("Deployment", "sleepy").spec.replicas == 0  # type: ignore[union-attr]
    spec_before = (h.get(SERVERS, "sleepy") or {})["spec"]

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    h.patch(SERVERS, "sleepy", {"metadata": {"annotations": {"corral.dev/wake-requested": now}}})

    wait_for("woken", lambda: h.read("Deployment", "sleepy").spec.replicas == 1, 30)  # type: ignore[union-attr]
    assert (h.get(SERVERS, "sleepy") or {})["spec"] == spec_before
    wait_for(
        "events for both transitions",
        lambda: {"ScaledToZero", "Woken"} <= event_reasons(h, "sleepy"),
        30,
    )


def test_per_user_instance_lives_until_idle(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.start()
    h.create(SERVERS, server("notes", tenancy="perUser", idleTimeout=10))
    h.wait_condition(SERVERS, "notes", "Ready", "True")
    assert h.read("Deployment", "notes") is None

    h.create(
        INSTANCES,
        {
            "apiVersion": "corral.dev/v1alpha1",
            "kind": "MCPServerInstance",
            "metadata": {"name": "notes-alice"},
            "spec": {"server": "notes", "owner": {"username": "alice"}},
        },
    )

    deployment = h.wait_object("Deployment", "notes-alice")
    assert deployment.metadata.owner_references[0].kind == "MCPServerInstance"
    assert (
        json.loads(h.read("ConfigMap", "notes-alice-shim").data["config.json"])["server"]["name"]
        == "notes"
    )  # type: ignore[union-attr]
    wait_for(
        "instance counted",
        lambda: (h.get(SERVERS, "notes") or {})["status"].get("instances") == 1,
        60,
    )

    wait_for("idle instance deleted", lambda: h.get(INSTANCES, "notes-alice") is None, 60)
    wait_for("its deployment collected", lambda: h.read("Deployment", "notes-alice") is None, 60)
    wait_for(
        "instance count back to 0",
        lambda: (h.get(SERVERS, "notes") or {})["status"].get("instances") == 0,
        60,
    )
