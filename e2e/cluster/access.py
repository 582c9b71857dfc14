"""How a running cluster is reached: its kubeconfig, API client, kubectl and helm.

Rule: `Cluster` is the stable interface that tests and tools use, whoever runs the cluster.
"""

from __future__ import annotations

import base64
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config

from e2e.cluster import certs
from e2e.cluster.toolset import ClusterError


@dataclass(frozen=True)
class Cluster:
    """How to reach a running cluster: the interface tests and tools rely on."""

    kubeconfig: Path
    server: str
    kubectl: Path
    helm: Path

    def api_client(self) -> client.ApiClient:
        """A new Kubernetes API client for this cluster; close it (or use it in a `with`)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def run_kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs the built kubectl against this cluster and returns its captured output."""
        result = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def wait_established(self, names: list[str], timeout: float) -> None:
        """Waits until every named CustomResourceDefinition is Established.

        Polls the condition itself: `kubectl wait` fails at once, instead of waiting, when it
        reads a CRD whose status has no conditions yet (just after it was created)."""
        query = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            result = self.run_kubectl(
                "get", "crd", pending[0], "-o", f"jsonpath={query}", check=False
            )
            if result.returncode == 0 and result.stdout.strip() == "True":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                detail = result.stderr.strip() or f"Established is {result.stdout.strip()!r}"
                raise ClusterError(
                    f"CRD {pending[0]} not Established within {timeout:g}s: {detail}"
                )
            time.sleep(0.1)


def existing_cluster(kubeconfig: Path, kubectl: Path, helm: Path) -> Cluster:
    """Describes a cluster that something else runs, reached through `kubeconfig`."""
    if not kubeconfig.is_file():
        raise ClusterError(f"KUBECONFIG={kubeconfig} is not a file: point it at one kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return Cluster(
        kubeconfig=kubeconfig, server=str(configuration.host), kubectl=kubectl, helm=helm
    )


def kubeconfig_document(server: str, ca_pem: bytes, user: str, pair: certs.KeyPair) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "corral",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pair.cert_pem),
                    "client-key-data": b64(pair.key_pem),
                },
            }
        ],
        "contexts": [{"name": "corral", "context": {"cluster": "corral", "user": user}}],
        "current-context": "corral",
    }
    return yaml.safe_dump(document, sort_keys=False)
