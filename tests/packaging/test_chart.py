"""The Helm chart: lint and template clean with the built helm, CRDs and operator RBAC equal to
their sources, least-privilege gateway RBAC, restricted pods, a schema that rejects bad values
with a message naming them, and a gateway configuration the gateway accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.gateway import audit_api
from corral.gateway.config import GatewayConfig
from e2e.cluster.launcher import Toolset
from tests.packaging.chart import (
    CHART,
    FULL_VALUES,
    MINIMAL,
    ROOT,
    HelmError,
    Rendered,
    chart_crds,
    render,
    run_helm,
    value_args,
)

CORRAL_READS = ["get", "list", "watch"]


@pytest.fixture(scope="module")
def helm(k8s_toolset: Toolset) -> Path:
    return k8s_toolset.binary("helm")


@pytest.fixture(scope="module")
def full(helm: Path) -> Rendered:
    return render(helm, values=value_args(files=[FULL_VALUES]))


@pytest.fixture(scope="module")
def minimal(helm: Path) -> Rendered:
    return render(helm)


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_chart_crds_equal_the_generated_crds_and_kopf_peering() -> None:
    sources = [d for p in sorted((ROOT / "crds").glob("*.yaml")) for d in _load_all(p)]
    sources += _load_all(ROOT / "config" / "rbac" / "peering-crds.yaml")
    by_name = {d["metadata"]["name"]: d for d in chart_crds()}
    assert sorted(by_name) == sorted(d["metadata"]["name"] for d in sources), (
        "charts/corral/crds is stale: copy crds/*.yaml and config/rbac/peering-crds.yaml"
    )
    for source in sources:
        assert by_name[source["metadata"]["name"]] == source, (
            f"charts/corral/crds: {source['metadata']['name']} differs from its source"
        )


@pytest.mark.parametrize("values", ["minimal", "full"])
def test_lint_is_clean(helm: Path, values: str) -> None:
    args = value_args() if values == "minimal" else value_args(files=[FULL_VALUES])
    output = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in output
    assert "[WARNING]" not in output
    assert "[ERROR]" not in output


def test_operator_rules_equal_config_rbac(minimal: Rendered) -> None:
    source = next(
        d for d in _load_all(ROOT / "config/rbac/operator.yaml") if d["kind"] == "ClusterRole"
    )
    chart = minimal.named("ClusterRole", "corral-operator")
    assert chart["rules"] == source["rules"]
    binding = minimal.named("ClusterRoleBinding", "corral-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "corral-operator", "namespace": "corral-system"}
    ]


def test_gateway_may_only_read_servers_create_instances_and_patch_their_status(
    minimal: Rendered,
) -> None:
    rules = minimal.named("ClusterRole", "corral-gateway")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    expected = {
        ("corral.dev", kind, v)
        for kind in ("accesspolicies", "mcpcatalogentries")
        for v in CORRAL_READS
    }
    expected |= {("corral.dev", "mcpservers", v) for v in [*CORRAL_READS, "patch"]}
    expected |= {("corral.dev", "mcpserverinstances", v) for v in [*CORRAL_READS, "create"]}
    expected |= {
        ("corral.dev", status, "patch")
        for status in ("mcpservers/status", "mcpserverinstances/status")
    }
    assert granted == expected
    for name in ("corral-gateway", "corral-operator"):
        role = minimal.named("ClusterRole", name)
        assert all("secrets" not in rule["resources"] for rule in role["rules"])
        assert all("*" not in rule["verbs"] for rule in role["rules"])


def test_operator_runs_two_peered_replicas(minimal: Rendered, helm: Path) -> None:
    deployment = minimal.named("Deployment", "corral-operator")
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering-name=corral-operator" in args
    assert "--standalone" not in args
    assert minimal.named("ClusterKopfPeering", "corral-operator")
    namespaced = render(
        helm, values=value_args(json_sets={"operator.watchNamespaces": '["team-a","team-b"]'})
    )
    peerings = namespaced.of_kind("KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not namespaced.of_kind("ClusterKopfPeering")
    args = namespaced.named("Deployment", "corral-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_operator_admits_exactly_the_gateway_pods_to_servers(minimal: Rendered) -> None:
    args = minimal.named("Deployment", "corral-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    flag = next(a for a in args if a.startswith("--gateway-pod-labels="))
    wanted = dict(pair.split("=", 1) for pair in flag.split("=", 1)[1].split(","))
    gateway_labels = minimal.named("Deployment", "corral-gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert wanted.items() <= gateway_labels.items()
    operator_labels = minimal.named("Deployment", "corral-operator")["spec"]["template"][
        "metadata"
    ]["labels"]
    assert not wanted.items() <= operator_labels.items()
    assert "--gateway-namespace=corral-system" in args


def test_every_pod_is_restricted(full: Rendered) -> None:
    for deployment in full.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "resources" in container


def test_namespaces_are_labelled_restricted(full: Rendered, minimal: Rendered) -> None:
    namespaces = {n["metadata"]["name"]: n["metadata"]["labels"] for n in full.of_kind("Namespace")}
    assert sorted(namespaces) == ["corral-system", "mcp-servers"]
    for labels in namespaces.values():
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not minimal.of_kind("Namespace"), "Helm cannot own the release namespace by default"


def test_gateway_config_is_accepted_by_the_gateway(full: Rendered) -> None:
    config_map = full.named("ConfigMap", "corral-gateway")
    config = GatewayConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.public_base_url == "https://corral.example.com"
    assert config.authorization_servers == ["https://idp.example.com"]
    assert config.database.dsn.file == Path("/etc/corral/secrets/database/dsn")
    assert config.database.dsn.value is None, "the DSN must come from a Secret"
    assert config.discovery.kind == "kubernetes"
    assert config.discovery.kubeconfig is None, "in-cluster credentials of its account"
    mounts = {
        m["mountPath"]
        for m in full.named("Deployment", "corral-gateway")["spec"]["template"]["spec"][
            "containers"
        ][0]["volumeMounts"]
    }
    assert [t.server for t in config.shim_tokens] == ["mcp-servers/*"]
    shim_tokens = [t.token for t in config.shim_tokens]
    secrets = (config.database.dsn, *config.identity.signing_keys, *config.sessions.keys)
    for secret in (*secrets, *shim_tokens):
        assert secret.file is not None
        assert str(secret.file.parent) in mounts


def test_gateway_service_ingress_autoscaler_and_network_policy(full: Rendered) -> None:
    service = full.named("Service", "corral-gateway")
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", "http"),
        ("mcp", "mcp"),
    ]
    container = full.named("Deployment", "corral-gateway")["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in container["containers"][0]["ports"]}
    assert ports == {"http": 8000, "mcp": 8001}
    config = yaml.safe_load(full.named("ConfigMap", "corral-gateway")["data"]["config.yaml"])
    assert config["listen"] == {"host": "0.0.0.0", "port": 8000, "mcpPort": 8001}
    ingress = full.named("Ingress", "corral-gateway")
    assert ingress["spec"]["rules"][0]["host"] == "corral.example.com"
    routes = {
        path["path"]: path["backend"]["service"]["port"]["name"]
        for path in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert routes == {"/mcp/": "mcp", "/": "http"}
    hpa = full.named("HorizontalPodAutoscaler", "corral-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "corral-gateway"
    assert "replicas" not in full.named("Deployment", "corral-gateway")["spec"]
    policy = full.named("NetworkPolicy", "corral-gateway")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8000},
        {"protocol": "TCP", "port": 8001},
    ]
    assert policy["spec"]["ingress"][0]["from"]
    shim_rule = policy["spec"]["egress"][1]
    assert shim_rule["ports"] == [{"protocol": "TCP", "port": 8484}]
    assert full.of_kind("ServiceMonitor")
    budget = full.named("PodDisruptionBudget", "corral-gateway")
    assert budget["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()


def test_images_come_from_values(helm: Path) -> None:
    rendered = render(
        helm,
        values=value_args(
            sets={**MINIMAL, "images.shim.tag": "1.2.3", "images.runner.repository": "reg/run"}
        ),
    )
    args = rendered.named("Deployment", "corral-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--shim-image=ghcr.io/corral-dev/corral-shim:1.2.3" in args
    assert "--runner-image=reg/run:0.1.0" in args


def test_shims_post_audit_to_the_gateways_ingest_route(helm: Path, minimal: Rendered) -> None:
    def operator_args(rendered: Rendered) -> list[str]:
        deployment = rendered.named("Deployment", "corral-operator")
        args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return args

    assert not [a for a in operator_args(minimal) if a.startswith("--audit-")]
    tokens = '[{"namespace": "team-a", "secret": {"name": "audit-team-a", "key": "t"}}]'
    rendered = render(
        helm,
        values=value_args(
            sets={**MINIMAL, "operator.audit.tokenSecret": "corral-audit"},
            json_sets={"operator.audit.namespaceTokens": tokens},
        ),
    )
    args = operator_args(rendered)
    url = next(a.removeprefix("--audit-url=") for a in args if a.startswith("--audit-url="))
    assert url == f"http://corral-gateway.corral-system.svc:80{audit_api.INGEST_PATH}"
    assert "--audit-token-secret=corral-audit" in args
    config_map = rendered.named("ConfigMap", "corral-gateway")
    config = GatewayConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert [t.server for t in config.shim_tokens] == ["team-a/*"]
    token_file = config.shim_tokens[0].token.file
    assert token_file is not None
    pod = rendered.named("Deployment", "corral-gateway")["spec"]["template"]["spec"]
    mount = next(
        m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(token_file.parent)
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {
        "secretName": "audit-team-a",
        "items": [{"key": "t", "path": token_file.name}],
    }
    explicit = render(
        helm,
        values=value_args(sets={**MINIMAL, "operator.audit.url": "https://audit.example/x"}),
    )
    assert "--audit-url=https://audit.example/x" in operator_args(explicit)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "/gateway/publicBaseUrl"),
        ({**MINIMAL, "gateway.publicBaseUrl": "corral.example.com"}, "/gateway/publicBaseUrl"),
        ({**MINIMAL, "kms.provider": "vault"}, "value must be one of 'local', 'gcp-kms'"),
        ({**MINIMAL, "operator.replica": "3"}, "additional properties 'replica' not allowed"),
        ({**MINIMAL, "images.pullPolicy": "Sometimes"}, "/images/pullPolicy"),
        ({**MINIMAL, "kms.provider": "aws-kms"}, "/kms/awsKms"),
        ({**MINIMAL, "database.dsnSecret.name": "Not_A_Name"}, "/database/dsnSecret/name"),
        ({**MINIMAL, "gateway.ingress.enabled": "true"}, "/gateway/ingress"),
    ],
)
def test_schema_rejects_bad_values_naming_them(
    helm: Path, values: dict[str, str], message: str
) -> None:
    args: list[str] = []
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    with pytest.raises(HelmError) as failure:
        run_helm(helm, "template", "corral", str(CHART), *args)
    assert message in str(failure.value)
