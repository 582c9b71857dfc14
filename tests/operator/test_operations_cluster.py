"""Running the operator: restarts mid-work, two replicas with one active, least privilege."""

from __future__ import annotations

import signal

import pytest
import yaml

from e2e.cluster.launcher import Cluster
from e2e.cluster.waiting import WaitTimeoutError, wait_for
from tests.fixtures.operator import RBAC_DIR, OperatorHarness
from tests.operator.test_servers_cluster import SERVERS, server

pytestmark = pytest.mark.cluster

ACCOUNT = "system:serviceaccount:corral-system:corral-operator"


def ready_count(h: OperatorHarness, names: list[str]) -> int:
    return sum(1 for n in names if (h.condition(SERVERS, n, "Ready") or {}).get("status") == "True")


def not_ready(h: OperatorHarness, names: list[str]) -> str:
    """Each server not Ready yet: its Ready condition and its Deployment's replicas."""
    lines = []
    for name in names:
        ready = h.condition(SERVERS, name, "Ready") or {}
        if ready.get("status") == "True":
            continue
        deployment = h.read("Deployment", name)
        replicas = "no Deployment"
        if deployment is not None:
            found = deployment.status
            replicas = f"Deployment ready {found.ready_replicas}/{deployment.spec.replicas}"
        lines.append(f"{name}: {ready.get('reason')} {ready.get('message')!r}; {replicas}")
    return "\n".join(lines)


def test_killed_mid_reconcile_converges_after_restart_without_duplicates(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    names = [f"s{i:02d}" for i in range(12)]
    first = h.start(extra=("--standalone",))
    for name in names:
        h.create(SERVERS, server(name))
    wait_for(
        "some deployments",
        lambda: len(h.apps.list_namespaced_deployment(h.namespace).items) >= 2,
        60,
    )

    first.process.stop(sig=signal.SIGKILL, grace=0)
    h.start(extra=("--standalone",))

    try:
        wait_for("all servers ready", lambda: ready_count(h, names) == len(names), 120)
    except WaitTimeoutError as error:
        raise AssertionError(f"{error}; not ready:\n{not_ready(h, names)}") from None
    deployments = h.apps.list_namespaced_deployment(h.namespace).items
    assert sorted(d.metadata.name for d in deployments) == names
    services = h.core.list_namespaced_service(h.namespace).items
    assert sorted(s.metadata.name for s in services) == names
    for name in names:
        sets = h.apps.list_namespaced_replica_set(
            h.namespace, label_selector=f"corral.dev/workload={name}"
        ).items
        assert len(sets) == 1, f"{name} was rolled out {len(sets)} times"


def peers(h: OperatorHarness) -> dict[str, object]:
    peering = h.custom.get_namespaced_custom_object(
        "kopf.dev", "v1", h.namespace, "kopfpeerings", "corral-operator"
    )
    return dict(peering.get("status") or {})


def test_two_replicas_only_one_acts(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    active = h.start(priority=200)
    standby = h.start(priority=100)
    wait_for("both replicas in the peering", lambda: len(peers(h)) == 2, 60)

    h.create(SERVERS, server("one"))
    h.wait_condition(SERVERS, "one", "Ready", "True")

    assert active.metric("corral_operator_reconciles_total", kind="MCPServer") > 0
    assert standby.metric("corral_operator_reconciles_total", kind="MCPServer") == 0

    active.process.stop(sig=signal.SIGTERM, grace=30)
    h.create(SERVERS, server("two"))
    h.wait_condition(SERVERS, "two", "Ready", "True")
    assert standby.metric("corral_operator_reconciles_total", kind="MCPServer") > 0


ALLOWED = [
    ("patch", "deployments.apps"),
    ("create", "deployments.apps"),
    ("delete", "configmaps"),
    ("patch", "mcpservers.corral.dev/status"),
    ("delete", "mcpserverinstances.corral.dev"),
    ("watch", "pods"),
    ("create", "events"),
]
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", "mcpservers.corral.dev"),
    ("create", "mcpservers.corral.dev"),
    ("update", "mcpservers.corral.dev"),
    ("delete", "mcpcatalogentries.corral.dev"),
    ("create", "serviceaccounts/token"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("patch", "nodes"),
]


@pytest.fixture
def operator_account(operator_cluster: Cluster) -> Cluster:
    operator_cluster.run_kubectl(
        "apply", "--server-side", "--field-manager=corral-tests",
        "-f", str(RBAC_DIR / "operator.yaml"),
    )  # fmt: skip
    return operator_cluster


@pytest.mark.parametrize(("verb", "resource"), ALLOWED + FORBIDDEN)
def test_service_account_can_do_what_rbac_says_and_no_more(
    operator_account: Cluster, verb: str, resource: str
) -> None:
    answer = operator_account.run_kubectl(
        "auth", "can-i", verb, resource, f"--as={ACCOUNT}", "-n", "team-a", check=False
    )
    assert answer.stdout.strip() == ("yes" if (verb, resource) in ALLOWED else "no")


def test_operator_runs_as_its_service_account(
    operator_account: Cluster, operator_harness: OperatorHarness
) -> None:
    h = operator_harness
    token = operator_account.run_kubectl(
        "create", "token", "corral-operator", "-n", "corral-system", "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(operator_account.kubeconfig.read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "operator"
    kubeconfig = h.workdir / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin))

    process = h.start(kubeconfig=kubeconfig)
    h.create(SERVERS, server("least"))
    h.wait_condition(SERVERS, "least", "Ready", "True")
    h.wait_object("NetworkPolicy", "least")

    assert "Forbidden" not in process.process.log_path.read_text(errors="replace")
