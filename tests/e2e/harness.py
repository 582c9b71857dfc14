"""The end-to-end stage: the chart's CRDs and RBAC on the test cluster, the operator and the
gateway as local processes under the identities of the chart's service accounts, and the pod
runner standing in for the kubelet.

Rule: everything the cluster holds comes from the chart's rendering (`tests/packaging/chart`);
the operator's command line is the one the chart's Deployment gives, with its mounted files and
listen addresses mapped to this machine. The gateways read the chart's rendered configuration
with the same mapping: one keeps the chart's Kubernetes discovery; the other gets a static
`servers` list of the pod runner's local shim addresses, because Service names do not resolve
on this machine (see `docs/install.md`, "Testing").
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from kubernetes import client

from corral.common.assertion import generate_signing_key, public_jwk
from corral.gateway.signing import signing_key_pem
from e2e.cluster.launcher import Cluster
from e2e.cluster.waiting import WaitTimeoutError, wait_for
from tests.e2e.podrunner import Mount, PodRunner, rewrite_paths
from tests.fixtures.processes import (
    LOOPBACK,
    RunningProcess,
    answers_http,
    free_port,
    start_process,
)
from tests.packaging.chart import CHART, Rendered, render, value_args

GROUP, VERSION = "corral.dev", "v1alpha1"
WAIT = 120.0
CORRAL = str(Path(sys.executable).parent / "corral")
INSTALLED_KINDS = (
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "KopfPeering",
    "ConfigMap",
)
CLUSTER_SCOPED = ("Namespace", "ClusterRole", "ClusterRoleBinding")


@dataclass(frozen=True)
class User:
    """A static gateway user and the bearer token that authenticates it."""

    name: str
    groups: tuple[str, ...]
    token: str = field(default_factory=lambda: f"tok-{uuid.uuid4().hex}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def entry(self) -> dict[str, Any]:
        return {"token": self.token, "user": self.name, "groups": list(self.groups)}


@dataclass
class Stage:
    """Names, files and processes of one end-to-end run."""

    cluster: Cluster
    workdir: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    processes: list[RunningProcess] = field(default_factory=list)
    gateway_port: int = field(default_factory=free_port)
    gateway_mcp_port: int = field(default_factory=free_port)
    audit_token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        key = generate_signing_key()
        self.signing_pem = signing_key_pem(key)
        self.jwks = orjson.dumps({"keys": [public_jwk(key)]}).decode()
        self.rendered = self._render()

    @property
    def release(self) -> str:
        return f"e2e-{self.suffix}"

    @property
    def system_namespace(self) -> str:
        return f"corral-{self.suffix}"

    @property
    def namespace(self) -> str:
        """Where the MCP servers live."""
        return f"mcp-{self.suffix}"

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    @property
    def gateway_mcp_url(self) -> str:
        """The gateway's MCP port (the chart's `mcp` port, where the Ingress sends /mcp/)."""
        return f"http://{LOOPBACK}:{self.gateway_mcp_port}"

    def _render(self) -> Rendered:
        return render(
            self.cluster.helm,
            release=self.release,
            namespace=self.system_namespace,
            values=value_args(
                sets={
                    "gateway.publicBaseUrl": self.gateway_url,
                    "operator.peeringName": f"peer-{self.suffix}",
                    "operator.audit.url": f"{self.gateway_url}/api/audit/ingest",
                    "operator.audit.tokenSecret": "corral-audit",
                },
                json_sets={
                    "identity.jwks": orjson.dumps(self.jwks).decode(),
                    "operator.idleCheckSeconds": "1",
                    "namespace.create": "true",
                    "operator.watchNamespaces": f'["{self.namespace}"]',
                    "serverNamespaces": f'["{self.namespace}"]',
                    "operator.audit.namespaceTokens": orjson.dumps(
                        [{"namespace": self.namespace, "secret": {"name": "corral-audit"}}]
                    ).decode(),
                },
            ),
        )

    def deployment(self, component: str) -> dict[str, Any]:
        return self.rendered.named("Deployment", f"{self.release}-corral-{component}")

    # --- the cluster side -------------------------------------------------------------------

    def install(self) -> None:
        """The chart's CRDs, namespaces, service accounts, RBAC and peering, for real."""
        self.cluster.run_kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=corral-tests",
            "-f", str(CHART / "crds"),
        )  # fmt: skip
        names = self.cluster.run_kubectl(
            "get", "crd", "-o", "jsonpath={.items[*].metadata.name}"
        ).stdout.split()
        self.cluster.wait_established(names, 60)
        objects = [o for o in self.rendered.objects if o["kind"] in INSTALLED_KINDS]
        self.cluster.run_kubectl(
            "apply", "--server-side", "--field-manager=corral-e2e", "-f", "-",
            stdin=yaml.safe_dump_all(objects),
        )  # fmt: skip
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "corral-audit", "namespace": self.namespace},
            "data": {"token": base64.b64encode(self.audit_token.encode()).decode()},
        }
        self.cluster.run_kubectl("apply", "-f", "-", stdin=orjson.dumps(secret).decode())

    def uninstall(self) -> None:
        for obj in self.rendered.objects:
            if obj["kind"] in CLUSTER_SCOPED:
                self.cluster.run_kubectl(
                    "delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false",
                    "--ignore-not-found", check=False,
                )  # fmt: skip

    def service_account_kubeconfig(self, component: str) -> Path:
        """A kubeconfig carrying a token of the chart's service account for `component`."""
        name = f"{self.release}-corral-{component}"
        token = self.cluster.run_kubectl(
            "create", "token", name, "-n", self.system_namespace, "--duration=2h"
        ).stdout.strip()
        document = yaml.safe_load(self.cluster.kubeconfig.read_text())
        for user in document["users"]:
            user["user"] = {"token": token}
        path = self.workdir / f"{component}.kubeconfig"
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)
        return path

    # --- the processes ----------------------------------------------------------------------

    def _mounted(
        self, component: str, files: Mapping[str, Mapping[str, str | bytes]]
    ) -> list[Mount]:
        """Write each volume's files under the work directory; the container's mounts to them."""
        container = self.deployment(component)["spec"]["template"]["spec"]["containers"][0]
        mounts: list[Mount] = []
        for mount in container.get("volumeMounts") or ():
            local = self.workdir / component / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for name, content in files.get(mount["name"], {}).items():
                data = content.encode() if isinstance(content, str) else content
                (local / name).write_bytes(data)
            mounts.append(Mount(mount["mountPath"], local))
        return mounts

    def start_operator(self) -> RunningProcess:
        """`corral operator` with the chart's arguments, as the chart's operator account."""
        container = self.deployment("operator")["spec"]["template"]["spec"]["containers"][0]
        mounts = self._mounted("operator", {"gateway-jwks": {"jwks.json": self.jwks}})
        live, metrics = free_port(), free_port()
        local = {
            "--liveness": f"http://{LOOPBACK}:{live}/healthz",
            "--metrics-host": LOOPBACK,
            "--metrics-port": str(metrics),
            "--log-json": None,
        }
        args = [rewrite_paths(a, mounts) for a in container["args"]]
        args = [a for a in args if a.split("=", 1)[0] not in local]
        args += [k if v is None else f"{k}={v}" for k, v in local.items() if v is not None]
        process = start_process(
            "operator",
            [CORRAL, *args],
            log_path=self.workdir / "operator.log",
            env={"KUBECONFIG": str(self.service_account_kubeconfig("operator"))},
        )
        self.processes.append(process)
        process.wait_until(
            lambda: answers_http(f"http://{LOOPBACK}:{live}/healthz"), timeout=WAIT, what="live"
        )
        return process

    def gateway_config(
        self, dsn: str, servers: list[dict[str, Any]], users: list[User]
    ) -> dict[str, Any]:
        """The chart's gateway configuration, its files mapped here, plus static servers."""
        session_key = base64.b64encode(os.urandom(32)).decode()
        mounts = self._mounted(
            "gateway",
            {
                "database": {"dsn": dsn},
                "signing": {"signing-key.pem": self.signing_pem},
                "sessions": {"session-key": session_key},
                "shim-token-0": {"token": self.audit_token},
            },
        )
        config_map = self.rendered.named("ConfigMap", f"{self.release}-corral-gateway")
        config: dict[str, Any] = yaml.safe_load(
            rewrite_paths(config_map["data"]["config.yaml"], mounts)
        )
        config["listen"] = {
            **config["listen"],
            "host": LOOPBACK,
            "port": self.gateway_port,
            "mcpPort": self.gateway_mcp_port,
        }
        config["discovery"] = {"kind": "static"}
        config["servers"] = servers
        config["users"] = [u.entry() for u in users]
        return config

    def discovering_gateway_config(self, dsn: str, users: list[User]) -> dict[str, Any]:
        """The chart's gateway configuration with Kubernetes discovery, as the chart's gateway
        account, on a port of its own."""
        config = self.gateway_config(dsn, [], users)
        config["listen"] = {"host": LOOPBACK, "port": free_port(), "mcpPort": None}
        config["discovery"] = {
            "kind": "kubernetes",
            "namespace": self.namespace,
            "kubeconfig": str(self.service_account_kubeconfig("gateway")),
        }
        return config

    def start_gateway(self, config: dict[str, Any], name: str = "gateway") -> str:
        """`corral gateway` with the chart's arguments, as the chart's gateway account; its URL."""
        container = self.deployment("gateway")["spec"]["template"]["spec"]["containers"][0]
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        args = [f"--config={path}" if a.startswith("--config=") else a for a in container["args"]]
        args = [a for a in args if a != "--log-json"]
        process = start_process(
            name,
            [CORRAL, *args],
            log_path=self.workdir / f"{name}.log",
            env={"KUBECONFIG": str(self.service_account_kubeconfig("gateway"))},
        )
        self.processes.append(process)
        url = f"http://{LOOPBACK}:{config['listen']['port']}"
        process.wait_until(lambda: http_ok(f"{url}/readyz"), timeout=WAIT, what="ready")
        return url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=10.0)
        self.processes.clear()

    # --- objects ------------------------------------------------------------------------------

    def custom(self, api: client.ApiClient) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(api)

    def create(self, api: client.ApiClient, plural: str, body: Mapping[str, Any]) -> None:
        self.custom(api).create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, dict(body)
        )

    def wait_shim(self, runner: PodRunner, workload: str) -> str:
        """The local shim URL of `workload` once its shim answers."""

        def ready() -> str | None:
            pods = runner.pods(workload)
            if not pods:
                return None
            admin = pods[0].ports.get(9494)
            if admin is None or not http_ok(f"http://{LOOPBACK}:{admin}/readyz"):
                return None
            return pods[0].shim_url

        try:
            url: str = wait_for(f"shim of {workload}", ready, WAIT)
        except WaitTimeoutError as error:
            raise AssertionError(f"{error}\n{runner.logs()}\n{runner.errors}") from None
        return url


def http_ok(url: str) -> bool:
    """Whether a GET of `url` answers with a success status."""
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except (urllib.error.HTTPError, OSError):
        return False


def manifest(kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def stage_lifetime(stage: Stage) -> Iterator[Stage]:
    """Install, yield, and take everything away again."""
    try:
        stage.install()
        yield stage
    finally:
        stage.stop()
        stage.uninstall()
