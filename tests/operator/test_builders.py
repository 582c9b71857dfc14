"""Pure builders and shim config rendering, table-tested without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from corral.api.catalog import MCPCatalogEntrySpec
from corral.api.policies import AccessPolicy
from corral.api.resolve import resolve_server
from corral.api.servers import MCPServerSpec
from corral.operator import builders
from corral.operator.builders import Built, Owner
from corral.operator.settings import GatewaySettings, OperatorSettings
from corral.operator.shimconfig import Workload, policies_for, render_shim_config
from corral.shim.config import parse_config

JWK = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k1"}
SETTINGS = OperatorSettings(
    gateway=GatewaySettings(issuer="https://gw.test", jwks=(JWK,), namespace="corral-system")
)
OWNER = Owner("MCPServer", "srv", "uid-1")
IMAGE = "ghcr.io/example/mcp:1"


def workload(
    spec: dict[str, Any],
    *,
    entry: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    instance: str | None = None,
) -> Workload:
    parsed = MCPServerSpec.model_validate(spec)
    entry_spec = MCPCatalogEntrySpec.model_validate(entry) if entry else None
    resolution = resolve_server(parsed, entry_spec)
    assert resolution.server is not None, resolution.problems
    return Workload(
        namespace="team",
        server="srv",
        labels=labels or {},
        catalog_entry=parsed.catalog_entry.name if parsed.catalog_entry else None,
        spec=parsed,
        effective=resolution.server,
        instance=instance,
    )


def build(spec: dict[str, Any], policies: list[AccessPolicy] = (), **kw: Any) -> Built:  # type: ignore[assignment]
    w = workload(spec, **kw)
    rendered = render_shim_config(w, policies, SETTINGS)
    assert rendered.config is not None, rendered.problems
    return builders.build_all(
        w, OWNER, SETTINGS, replicas=w.effective.replicas, config=rendered.config
    )


def containers(built: Built) -> dict[str, dict[str, Any]]:
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def shim_config(built: Built) -> Any:
    return parse_config(built.of_kind("ConfigMap")["data"]["config.json"])


def policy(
    name: str, targets: dict[str, Any], namespace: str = "team", **rule: Any
) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "subjects": [{"user": "*"}],
                "targets": targets,
                "rules": [{"effect": "Allow", "methods": ["*"], **rule}],
            },
        }
    )


RUNTIMES = [
    pytest.param(
        {"container": {"image": IMAGE, "port": 3000, "path": "/m", "args": ["--x"]}},
        IMAGE,
        None,
        "http://127.0.0.1:3000/m",
        id="container",
    ),
    pytest.param(
        {"stdio": {"image": "ghcr.io/example/stdio:1", "command": ["srv"], "args": ["-v"]}},
        "ghcr.io/example/stdio:1",
        ["srv", "-v"],
        "http://127.0.0.1:8000/mcp",
        id="stdio",
    ),
    pytest.param(
        {"npx": {"package": "@modelcontextprotocol/server-memory", "args": ["a"]}},
        SETTINGS.images.runner,
        ["npx", "--yes", "@modelcontextprotocol/server-memory", "a"],
        "http://127.0.0.1:8000/mcp",
        id="npx",
    ),
    pytest.param(
        {"uvx": {"package": "mcp-server-time"}},
        SETTINGS.images.runner,
        ["uvx", "mcp-server-time"],
        "http://127.0.0.1:8000/mcp",
        id="uvx",
    ),
]


@pytest.mark.parametrize(("runtime", "image", "wrapped", "upstream"), RUNTIMES)
def test_hosted_runtimes_run_server_and_shim(
    runtime: dict[str, Any], image: str, wrapped: list[str] | None, upstream: str
) -> None:
    built = build({"runtime": runtime})
    server = containers(built)["server"]
    assert server["image"] == image
    if wrapped is None:
        assert "command" not in server
        assert server["args"] == ["--x"]
    else:
        assert server["command"][:2] == ["corral", "bridge"]
        assert server["command"][server["command"].index("--") + 1 :] == wrapped
    assert shim_config(built).upstream.url == upstream


def test_remote_server_gets_the_shim_alone() -> None:
    built = build(
        {
            "runtime": {
                "remote": {
                    "url": "https://mcp.example.com/mcp",
                    "headers": [{"name": "X-Team", "value": "a"}],
                }
            }
        }
    )
    assert set(containers(built)) == {"shim"}
    config = shim_config(built)
    assert config.upstream.url == "https://mcp.example.com/mcp"
    assert config.upstream.headers == {"X-Team": "a"}


def test_every_container_and_the_pod_run_restricted() -> None:
    built = build({"runtime": RUNTIMES[2].values[0]})
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "server-tmp", "mountPath": "/tmp"} in containers(built)["server"][
        "volumeMounts"
    ]


def test_shim_probes_use_the_admin_health_endpoints() -> None:
    shim = containers(build({"runtime": RUNTIMES[0].values[0]}))["shim"]
    assert shim["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert shim["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in shim["ports"]} == {"mcp": 8484, "admin": 9494}


SECRET_SPEC = {
    "runtime": {"container": {"image": IMAGE, "port": 3000}},
    "env": [
        {"name": "PLAIN", "value": "v"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "server-creds", "key": "k"}}},
    ],
    "files": [
        {"path": "/etc/app/config.toml", "content": "a = 1"},
        {"path": "/etc/app/key", "valueFrom": {"secretKeyRef": {"name": "server-key", "key": "k"}}},
    ],
    "filters": [
        {"name": "dlp", "url": "https://dlp.example.com", "secretRef": {"name": "dlp-hmac"}}
    ],
}


def test_server_config_reaches_only_the_server_and_shim_secrets_only_the_shim() -> None:
    built = build(SECRET_SPEC)
    by_name = containers(built)
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    shim_mounts = {m["name"] for m in by_name["shim"]["volumeMounts"]}
    server_mounts = {m["name"] for m in by_name["server"]["volumeMounts"]}

    assert "env" not in by_name["shim"]
    assert [e["name"] for e in by_name["server"]["env"]] == ["PLAIN", "API_KEY"]
    assert "server-files" in server_mounts
    assert "server-files" not in shim_mounts
    assert "filter-dlp" in shim_mounts
    assert "filter-dlp" not in server_mounts
    assert volumes["filter-dlp"]["secret"]["secretName"] == "dlp-hmac"
    sources = volumes["server-files"]["projected"]["sources"]
    assert sources[1]["secret"]["name"] == "server-key"
    files = next(o for o in built.objects if o["metadata"]["name"] == "srv-files")
    assert files["data"] == {"file-0": "a = 1"}
    config_text = built.of_kind("ConfigMap")["data"]["config.json"]
    assert "server-creds" not in config_text
    assert "a = 1" not in config_text
    assert str(shim_config(built).filters[0].secret.file) == "/var/run/corral/filters/dlp/hmacKey"


def test_every_object_is_owned_by_the_server() -> None:
    built = build({**SECRET_SPEC, "replicas": 3})
    kinds = sorted(o["kind"] for o in built.objects)
    assert kinds == [
        "ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    for obj in built.objects:
        assert obj["metadata"]["ownerReferences"] == [OWNER.reference()]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "corral-operator"


@pytest.mark.parametrize(("replicas", "has_pdb"), [(None, False), (1, False), (2, True), (5, True)])
def test_disruption_budget_only_for_several_replicas(replicas: int | None, has_pdb: bool) -> None:
    spec: dict[str, Any] = {"runtime": RUNTIMES[0].values[0]}
    if replicas is not None:
        spec["replicas"] = replicas
    built = build(spec)
    assert any(o["kind"] == "PodDisruptionBudget" for o in built.objects) is has_pdb
    assert (("policy/v1", "PodDisruptionBudget", "srv") in built.absent) is not has_pdb


def test_network_policy_admits_the_gateway_and_blocks_private_egress() -> None:
    built = build({**SECRET_SPEC, "egress": {"allow": ["10.1.2.0/24", "api.example.com"]}})
    spec = built.of_kind("NetworkPolicy")["spec"]
    source = spec["ingress"][0]["from"][0]
    assert source["podSelector"] == {"matchLabels": SETTINGS.gateway.pod_labels}
    assert source["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "corral-system"}
    }
    assert spec["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8484}]
    blocks = [p["ipBlock"] for rule in spec["egress"] for p in rule["to"] if "ipBlock" in p]
    public = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"):
        assert cidr in public["except"]
    assert {"cidr": "10.1.2.0/24"} in blocks


def test_config_hash_follows_the_spec_but_not_policies() -> None:
    base = {"runtime": RUNTIMES[0].values[0]}

    def digest(spec: dict[str, Any], policies: list[AccessPolicy]) -> str:
        built = build(spec, policies)
        return str(
            built.of_kind("Deployment")["spec"]["template"]["metadata"]["annotations"][
                builders.CONFIG_HASH
            ]
        )

    first = digest(base, [])
    assert digest(base, []) == first
    assert digest({**base, "env": [{"name": "A", "value": "1"}]}, []) != first
    assert digest({**base, "tools": {"deny": ["delete_*"]}}, []) != first
    assert digest(base, [policy("p", {"servers": ["srv"]})]) == first


def test_shim_config_carries_policies_tools_audit_and_identity() -> None:
    policies = [
        policy("by-name", {"servers": ["srv"]}),
        policy("by-label", {"serverSelector": {"matchLabels": {"tier": "prod"}}}),
        policy("by-entry", {"catalogEntries": ["other"]}),
        policy("elsewhere", {"servers": ["srv"]}, namespace="other-team"),
        policy("broken", {"servers": ["srv"]}, when="user.nope("),
    ]
    built = build(
        {
            "runtime": RUNTIMES[0].values[0],
            "tools": {"deny": ["delete_*"]},
            "audit": {"payloads": "full", "redact": ["$.params.arguments.password"]},
        },
        policies,
        labels={"tier": "prod"},
    )
    config = shim_config(built)
    assert [p.metadata.name for p in config.policies] == ["by-label", "by-name"]
    assert config.tools.deny == ["delete_*"]
    assert config.audit.payloads == "full"
    assert config.audit.redact == ["$.params.arguments.password"]
    assert config.identity.issuer == "https://gw.test"
    assert config.audience == "corral:team/srv"


def test_catalog_entry_runtime_and_defaults_merge_under_server_overrides() -> None:
    entry = {
        "title": "Memory",
        "runtime": {"npx": {"package": "@modelcontextprotocol/server-memory"}},
        "defaults": {"tools": {"deny": ["x_*"]}, "env": [{"name": "LEVEL", "value": "low"}]},
        "config": [{"name": "mode", "target": "env", "key": "MODE", "default": "a"}],
    }
    spec = {
        "catalogEntry": {"name": "memory", "config": [{"name": "mode", "value": "b"}]},
        "env": [{"name": "LEVEL", "value": "high"}],
    }
    built = build(spec, entry=entry)
    server = containers(built)["server"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["LEVEL"] == "high"
    assert env["MODE"] == "b"
    assert "@modelcontextprotocol/server-memory" in server["command"]
    assert shim_config(built).server.catalog_entry == "memory"
    assert shim_config(built).tools.deny == ["x_*"]


def test_instances_are_named_and_labelled_for_their_user() -> None:
    built = build({"runtime": RUNTIMES[0].values[0]}, instance="srv-alice")
    deployment = built.of_kind("Deployment")
    assert deployment["metadata"]["name"] == "srv-alice"
    assert deployment["metadata"]["labels"][builders.LABEL_INSTANCE] == "srv-alice"
    assert deployment["spec"]["selector"]["matchLabels"][builders.LABEL_WORKLOAD] == "srv-alice"
    assert shim_config(built).server.name == "srv"


@pytest.mark.parametrize(
    ("spec", "settings", "problem"),
    [
        (
            {"runtime": {"container": {"image": IMAGE, "port": 8484}}},
            SETTINGS,
            "taken by the shim",
        ),
        (
            {
                "runtime": RUNTIMES[0].values[0],
                "filters": [{"name": "dlp", "url": "https://dlp.example.com"}],
            },
            SETTINGS,
            "has no secretRef",
        ),
        ({"runtime": RUNTIMES[0].values[0]}, OperatorSettings(), "no gateway JWKS"),
    ],
)
def test_unrenderable_configs_are_problems(
    spec: dict[str, Any], settings: OperatorSettings, problem: str
) -> None:
    rendered = render_shim_config(workload(spec), [], settings)
    assert rendered.config is None
    assert any(problem in p for p in rendered.problems)


def test_policies_for_ignores_other_namespaces_and_invalid_policies() -> None:
    w = workload({"runtime": RUNTIMES[0].values[0]})
    chosen = policies_for(
        [policy("ok", {"servers": ["srv"]}), policy("bad", {"servers": ["srv"]}, when="(")], w
    )
    assert [p.metadata.name for p in chosen] == ["ok"]


EXCHANGE = {
    "tokenEndpoint": "https://auth.example.com/oauth/token",
    "clientSecretRef": {"name": "github-exchange"},
    "audience": "https://api.github.com",
    "scopes": ["repo"],
    "inject": {"header": "X-Upstream-Token", "prefix": ""},
}


@pytest.mark.parametrize(
    "runtime",
    [RUNTIMES[0].values[0], {"remote": {"url": "https://mcp.example.com/mcp"}}],
    ids=["hosted", "remote"],
)
def test_token_exchange_secret_reaches_the_shim_alone(runtime: dict[str, Any]) -> None:
    built = build({"runtime": runtime, "tokenExchange": EXCHANGE})
    by_name = containers(built)
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    shim_mounts = {m["name"]: m["mountPath"] for m in by_name["shim"]["volumeMounts"]}

    assert volumes["token-exchange"]["secret"] == {
        "secretName": "github-exchange",
        "items": [
            {"key": "clientId", "path": "clientId"},
            {"key": "clientSecret", "path": "clientSecret"},
        ],
    }
    assert shim_mounts["token-exchange"] == "/var/run/corral/token-exchange"
    for name, container in by_name.items():
        if name != "shim":
            text = str(container)
            assert "token-exchange" not in text
            assert "github-exchange" not in text
            assert "auth.example.com" not in text
    exchange = shim_config(built).token_exchange
    assert exchange is not None
    assert exchange.token_endpoint == "https://auth.example.com/oauth/token"
    assert str(exchange.client_id.file) == "/var/run/corral/token-exchange/clientId"
    assert str(exchange.client_secret.file) == "/var/run/corral/token-exchange/clientSecret"
    assert exchange.client_secret.value is None
    assert (exchange.audience, exchange.resource, exchange.scopes) == (
        "https://api.github.com",
        None,
        ["repo"],
    )
    assert (exchange.inject.header, exchange.inject.prefix) == ("X-Upstream-Token", "")


def test_without_token_exchange_nothing_is_mounted_or_rendered() -> None:
    built = build({"runtime": RUNTIMES[0].values[0]})
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    assert "token-exchange" not in {v["name"] for v in pod["volumes"]}
    assert shim_config(built).token_exchange is None


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "https://other.example.com"},
        {"clientSecretRef": {"name": "other-exchange"}},
        {"scopes": ["repo", "gist"]},
    ],
)
def test_config_hash_follows_token_exchange(change: dict[str, Any]) -> None:
    def digest(exchange: dict[str, Any] | None) -> str:
        spec: dict[str, Any] = {"runtime": RUNTIMES[0].values[0]}
        if exchange is not None:
            spec["tokenExchange"] = exchange
        annotations = build(spec).of_kind("Deployment")["spec"]["template"]["metadata"]
        return str(annotations["annotations"][builders.CONFIG_HASH])

    assert digest(EXCHANGE) != digest(None)
    assert digest({**EXCHANGE, **change}) != digest(EXCHANGE)


def test_remote_headers_from_secrets_are_mounted_into_the_shim_as_files() -> None:
    remote = {
        "url": "https://mcp.example.com/mcp",
        "headers": [
            {"name": "X-Team", "value": "blue"},
            {"name": "X-Api-Key", "secretKeyRef": {"name": "remote-creds", "key": "apiKey"}},
        ],
    }
    built = build({"runtime": {"remote": remote}})
    pod = built.of_kind("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    shim_mounts = {m["name"]: m["mountPath"] for m in containers(built)["shim"]["volumeMounts"]}

    assert volumes["upstream-headers"]["projected"]["sources"] == [
        {
            "secret": {
                "name": "remote-creds",
                "optional": False,
                "items": [{"key": "apiKey", "path": "header-1"}],
            }
        }
    ]
    assert shim_mounts["upstream-headers"] == "/var/run/corral/upstream-headers"
    upstream = shim_config(built).upstream
    assert upstream.headers == {"X-Team": "blue"}
    assert str(upstream.secret_headers["X-Api-Key"].file) == (
        "/var/run/corral/upstream-headers/header-1"
    )
