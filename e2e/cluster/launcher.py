"""Starts and stops the local Kubernetes control plane used by the tests and by `make cluster`.

Rule: every component runs in its own process group under one temporary directory; startup waits
on readiness endpoints and API conditions (never fixed sleeps); stopping kills every group and
removes the directory. `python -m e2e.cluster.launcher` runs it in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from kubernetes import client

from e2e.cluster.access import Cluster, existing_cluster, kubeconfig_document
from e2e.cluster.pki import Pki, write_pki
from e2e.cluster.processes import Component, free_port, spawn
from e2e.cluster.toolset import ClusterError, Toolset, build, cache_toolset, pinned_versions

SERVICE_CIDR = "10.0.0.0/16"
NODE_MONITOR_GRACE = "5m"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POLL_INTERVAL = 0.2
STOP_GRACE = 10.0
PORT_RACE_ATTEMPTS = 3

__all__ = [
    "Cluster",
    "ClusterError",
    "ControlPlane",
    "Toolset",
    "build",
    "cache_toolset",
    "existing_cluster",
    "main",
    "pinned_versions",
]


def fake_node(name: str) -> dict[str, Any]:
    """A Node that KWOK manages: it reports it Ready and plays its pods' lifecycle."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@dataclass
class _Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


class PortTakenError(ClusterError):
    """A component could not bind the free port picked for it: something else took it first."""


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK, started together."""

    def __init__(self, toolset: Toolset, workdir: Path) -> None:
        self.toolset = toolset
        self.workdir = workdir
        self.components: list[Component] = []
        self.startup_seconds = 0.0
        self.controller_api_qps: int | None = None
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise ClusterError("the control plane has not been started")
        return self._cluster

    @classmethod
    def start(
        cls,
        toolset: Toolset,
        *,
        nodes: int = 2,
        timeout: float = 120.0,
        temp_parent: Path | None = None,
        controller_api_qps: int | None = None,
    ) -> ControlPlane:
        """Starts every component and returns once the cluster schedules onto Ready fake nodes.

        The working directory is made under `temp_parent` (default: the system's temporary
        directory). On failure the tail of each component's log goes to stderr and everything
        is stopped. `controller_api_qps` raises kube-controller-manager's client rate limit
        (burst twice that) from Kubernetes' default of 20, for runs of hundreds of Deployments.
        """
        if toolset.missing():
            raise ClusterError(
                f"{toolset.directory} lacks {toolset.missing()}: run `make cluster-build`"
            )
        for _ in range(PORT_RACE_ATTEMPTS - 1):
            with contextlib.suppress(PortTakenError):
                return cls._start_once(toolset, nodes, timeout, temp_parent, controller_api_qps)
            print("a port was taken before a component bound it; starting again", file=sys.stderr)
        return cls._start_once(toolset, nodes, timeout, temp_parent, controller_api_qps)

    @classmethod
    def _start_once(
        cls,
        toolset: Toolset,
        nodes: int,
        timeout: float,
        temp_parent: Path | None,
        controller_api_qps: int | None = None,
    ) -> ControlPlane:
        plane = cls(toolset, Path(tempfile.mkdtemp(prefix="corral-k8s-", dir=temp_parent)))
        plane.controller_api_qps = controller_api_qps
        try:
            plane._boot(nodes, _Deadline(timeout))
        except BaseException as error:
            lost_port_race = plane.lost_port_race()
            plane.print_log_tails(sys.stderr)
            plane.stop()
            if lost_port_race:
                raise PortTakenError(str(error)) from error
            raise
        return plane

    def _spawn(self, name: str, args: Sequence[str]) -> Component:
        log = self.workdir / "logs" / f"{name}.log"
        component = spawn(name, [str(self.toolset.binary(name)), *args], log, cwd=self.workdir)
        self.components.append(component)
        return component

    def _boot(self, nodes: int, deadline: _Deadline) -> None:
        pki = write_pki(self.workdir / "pki")
        etcd_url = self._start_etcd(deadline)
        server = self._start_apiserver(pki, etcd_url, deadline)
        kubeconfigs = self._write_kubeconfigs(pki, server)
        admin = kubeconfigs["admin"]
        self._cluster = Cluster(
            kubeconfig=admin,
            server=server,
            kubectl=self.toolset.binary("kubectl"),
            helm=self.toolset.binary("helm"),
        )
        probes = [
            self._start_controller_manager(pki, kubeconfigs["kube-controller-manager"]),
            self._start_scheduler(kubeconfigs["kube-scheduler"]),
            self._start_kwok(admin),
        ]
        for component, url in probes:
            self._wait_http(component, url, insecure_tls=True, deadline=deadline)
        with self.cluster.api_client() as api:
            core = client.CoreV1Api(api)
            names = [f"kwok-node-{index}" for index in range(nodes)]
            for name in names:
                core.create_node(fake_node(name))
            self._wait_until("fake nodes Ready", lambda: _nodes_ready(core, names), deadline)
            self._wait_until(
                "the default ServiceAccount", lambda: _has_default_account(core), deadline
            )
        self.startup_seconds = time.monotonic() - deadline.started

    def _start_etcd(self, deadline: _Deadline) -> str:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=corral",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=corral={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_http(etcd, f"{client_url}/health", deadline=deadline)
        return client_url

    def _start_apiserver(self, pki: Pki, etcd_url: str, deadline: _Deadline) -> str:
        port = free_port()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        server = f"https://127.0.0.1:{port}"
        self._wait_http(apiserver, f"{server}/readyz", deadline=deadline, pki=pki)
        return server

    def _write_kubeconfigs(self, pki: Pki, server: str) -> dict[str, Path]:
        ca_pem = pki.ca_cert.read_bytes()
        paths: dict[str, Path] = {}
        for user, pair in pki.clients.items():
            path = self.workdir / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig")
            path.write_text(kubeconfig_document(server, ca_pem, user, pair))
            path.chmod(0o600)
            paths[user] = path
        return paths

    def _start_controller_manager(self, pki: Pki, kubeconfig: Path) -> tuple[Component, str]:
        port = free_port()
        component = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kube-controller-manager'}",
                "--controllers=*",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_private}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                "--profiling=false",
                *self._controller_rate_flags(),
            ],
        )
        return component, f"https://127.0.0.1:{port}/healthz"

    def _controller_rate_flags(self) -> list[str]:
        qps = self.controller_api_qps
        if qps is None:
            return []
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"]

    def _start_scheduler(self, kubeconfig: Path) -> tuple[Component, str]:
        port = free_port()
        component = self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kube-scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        return component, f"https://127.0.0.1:{port}/readyz"

    def _start_kwok(self, kubeconfig: Path) -> tuple[Component, str]:
        port = free_port()
        component = self._spawn(
            "kwok",
            [
                f"--kubeconfig={kubeconfig}",
                f"--config={self.toolset.kwok_stages}",
                "--manage-all-nodes=true",
                f"--server-address=127.0.0.1:{port}",
            ],
        )
        return component, f"http://127.0.0.1:{port}/healthz"

    def _wait_http(
        self,
        component: Component,
        url: str,
        *,
        deadline: _Deadline,
        insecure_tls: bool = False,
        pki: Pki | None = None,
    ) -> None:
        context = ssl.create_default_context()
        if pki is not None:
            context.load_verify_locations(cafile=str(pki.ca_cert))
            admin = pki.clients["admin"]
            cert_file = self.workdir / "pki" / "probe.crt"
            cert_file.write_bytes(admin.cert_pem + admin.key_pem)
            context.load_cert_chain(str(cert_file))
        if insecure_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

        def ready() -> bool:
            code = component.exited()
            if code is not None:
                raise ClusterError(f"{component.name} exited with code {code} while starting")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        self._wait_until(f"{component.name} at {url}", ready, deadline)

    def _wait_until(self, what: str, condition: Callable[[], bool], deadline: _Deadline) -> None:
        while not condition():
            failed = self.failed_components()
            if failed:
                raise ClusterError(f"{', '.join(failed)} exited while waiting for {what}")
            if deadline.remaining() <= 0:
                raise ClusterError(f"timed out after {deadline.seconds:.0f} s waiting for {what}")
            time.sleep(POLL_INTERVAL)

    def lost_port_race(self) -> bool:
        """Whether a component exited because its free port was taken before it could bind."""
        return any(
            component.exited() is not None and "address already in use" in component.log_tail()
            for component in self.components
        )

    def failed_components(self) -> list[str]:
        return [c.name for c in self.components if c.exited() is not None]

    def rss_bytes(self) -> int:
        """The resident memory of all components together."""
        return sum(component.rss_bytes() for component in self.components)

    def print_log_tails(self, stream: IO[str]) -> None:
        for component in self.components:
            print(f"----- last lines of {component.name} ({component.log}) -----", file=stream)
            print(component.log_tail(), file=stream)

    def stop(self) -> None:
        """Kills every component's process group, dependents first, and removes the directory."""
        for component in reversed(self.components):
            component.stop(STOP_GRACE)
        self.components.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _nodes_ready(core: client.CoreV1Api, names: Sequence[str]) -> bool:
    ready = set()
    for node in core.list_node().items:
        conditions = node.status.conditions or []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            ready.add(node.metadata.name)
    return ready.issuperset(names)


def _has_default_account(core: client.CoreV1Api) -> bool:
    accounts = core.list_namespaced_service_account("default").items
    return any(account.metadata.name == "default" for account in accounts)


def _run_foreground(plane: ControlPlane) -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop.wait(0.5):
        failed = plane.failed_components()
        if failed:
            print(f"{', '.join(failed)} exited; stopping the control plane", file=sys.stderr)
            plane.print_log_tails(sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster.launcher",
        description="Run the local Kubernetes control plane in the foreground until Ctrl-C.",
    )
    parser.add_argument("--nodes", type=int, default=2, help="number of KWOK fake nodes")
    parser.add_argument("--timeout", type=float, default=120.0, help="startup timeout, seconds")
    options = parser.parse_args(argv)
    try:
        toolset = build()
        with ControlPlane.start(toolset, nodes=options.nodes, timeout=options.timeout) as plane:
            versions = pinned_versions()
            print(
                f"Kubernetes {versions['KUBERNETES_VERSION']} control plane ready in "
                f"{plane.startup_seconds:.1f} s at {plane.cluster.server}, "
                f"{plane.rss_bytes() / 2**20:.0f} MiB resident, {options.nodes} KWOK nodes.\n"
                f"kubectl and helm: {toolset.directory / 'bin'}\n"
                "Press Ctrl-C to stop.\n\n"
                f"export KUBECONFIG={plane.cluster.kubeconfig}",
                flush=True,
            )
            return _run_foreground(plane)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
