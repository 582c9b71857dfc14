"""Token exchange on a real API server: the client Secret is mounted into the shim alone."""

from __future__ import annotations

from typing import Any

import pytest

from corral.shim.config import parse_config
from e2e.cluster.waiting import wait_for
from tests.fixtures.operator import WAIT, OperatorHarness

pytestmark = pytest.mark.cluster

CLIENT_SECRET = "exchange-client-secret-value"


def test_token_exchange_secret_is_mounted_in_the_shim_only(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    h.core.create_namespaced_secret(
        h.namespace,
        {
            "metadata": {"name": "github-exchange"},
            "stringData": {"clientId": "corral", "clientSecret": CLIENT_SECRET},
        },
    )
    h.start()
    h.create(
        "mcpservers",
        {
            "apiVersion": "corral.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "github"},
            "spec": {
                "runtime": {"container": {"image": "ghcr.io/example/mcp:1", "port": 3000}},
                "tokenExchange": {
                    "tokenEndpoint": "https://auth.example.com/oauth/token",
                    "clientSecretRef": {"name": "github-exchange"},
                    "audience": "https://api.github.com",
                    "scopes": ["repo"],
                },
            },
        },
    )
    h.wait_condition("mcpservers", "github", "Ready", "True")

    def pods() -> list[Any]:
        selector = "corral.dev/workload=github"
        return list(h.core.list_namespaced_pod(h.namespace, label_selector=selector).items)

    spec = wait_for("a pod of github", pods, WAIT)[0].spec
    volume = next(v for v in spec.volumes if v.secret and v.secret.secret_name == "github-exchange")
    by_name = {c.name: c for c in spec.containers}
    shim_mounts = {m.name: m.mount_path for m in by_name["shim"].volume_mounts}
    assert shim_mounts[volume.name] == "/var/run/corral/token-exchange"
    assert volume.name not in {m.name for m in by_name["server"].volume_mounts or ()}
    assert not by_name["server"].env_from
    server_text = str(by_name["server"].to_dict())
    assert "github-exchange" not in server_text
    assert "auth.example.com" not in server_text

    text = h.wait_object("ConfigMap", "github-shim").data["config.json"]
    assert CLIENT_SECRET not in text
    exchange = parse_config(text).token_exchange
    assert exchange is not None
    assert exchange.token_endpoint == "https://auth.example.com/oauth/token"
    assert str(exchange.client_secret.file) == "/var/run/corral/token-exchange/clientSecret"
    assert exchange.scopes == ["repo"]
