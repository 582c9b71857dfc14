"""Starts and stops the local Kubernetes control plane used by the tests and by `make cluster`.

Rule: every component runs in its own process group under one temporary directory; startup waits
on readiness endpoints and API conditions (never fixed sleeps); stopping kills every group and
removes the directory. `python -m e2e.cluster.launcher` runs it in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
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

import yaml
from kubernetes import client, config

from e2e.cluster import certs

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
VERSIONS_FILE = HERE / "versions.env"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POLL_INTERVAL = 0.2
STOP_GRACE = 10.0
LOG_TAIL_LINES = 40


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says what to do."""


def pinned_versions() -> dict[str, str]:
    """The versions pinned in versions.env, the single place they are set."""
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Toolset:
    """The built binaries and KWOK stages of one pinned version, in the build cache."""

    directory: Path

    def binary(self, name: str) -> Path:
        return self.directory / "bin" / name

    @property
    def kwok_stages(self) -> Path:
        return self.directory / "kwok-stages.yaml"

    def missing(self) -> list[str]:
        absent = [name for name in BINARIES if not os.access(self.binary(name), os.X_OK)]
        if not self.kwok_stages.is_file():
            absent.append(self.kwok_stages.name)
        return absent


def cache_toolset() -> Toolset:
    """Where the build script puts (or has put) the pinned version's binaries."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Toolset(Path(result.stdout.strip()))


def build(log: IO[str] | None = None) -> Toolset:
    """Builds whatever is missing from the cache (a no-op when warm) and returns the toolset.

    Build output goes to `log` when given, else to this process's stderr.
    """
    result = subprocess.run(
        [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=log, text=True, check=False
    )
    if result.returncode != 0:
        where = f"; its output is in {log.name}" if log is not None else ""
        raise ClusterError(
            f"{BUILD_SCRIPT} failed with exit code {result.returncode}{where}. "
            "Fix what it reports (for a missing `go`, install Go 1.26 or newer) and run "
            "`make cluster-build`."
        )
    toolset = Toolset(Path(result.stdout.strip().splitlines()[-1]))
    if toolset.missing():
        raise ClusterError(f"the build finished but {toolset.missing()} are missing")
    return toolset


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


def existing_cluster(kubeconfig: Path, kubectl: Path, helm: Path) -> Cluster:
    """Describes a cluster that something else runs, reached through `kubeconfig`."""
    if not kubeconfig.is_file():
        raise ClusterError(f"KUBECONFIG={kubeconfig} is not a file: point it at one kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return Cluster(
        kubeconfig=kubeconfig, server=str(configuration.host), kubectl=kubectl, helm=helm
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent_hook() -> Callable[[], object]:
    """A pre-exec hook that makes the kernel kill the child if the launcher dies first.

    libc is loaded here, in the parent, so the child only makes one system call before exec.
    """
    pr_set_pdeathsig = 1
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return functools.partial(prctl, pr_set_pdeathsig, int(signal.SIGKILL))


@dataclass
class Component:
    """One running control-plane process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def exited(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_bytes(self) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


@dataclass(frozen=True)
class Pki:
    """Paths of the certificates and keys written for one control plane."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_private: Path
    sa_public: Path
    clients: dict[str, certs.KeyPair]


def write_pki(directory: Path) -> Pki:
    directory.mkdir(mode=0o700)
    ca = certs.new_ca()
    serving = certs.issue(
        ca,
        "kube-apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ip_addresses=["127.0.0.1", "10.0.0.1"],
    )
    sa_private, sa_public = certs.signing_key()
    files = {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "apiserver.crt": serving.cert_pem,
        "apiserver.key": serving.key_pem,
        "sa.key": sa_private,
        "sa.pub": sa_public,
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)
    clients = {
        "admin": certs.issue(ca, "admin", organizations=["system:masters"]),
        "kube-controller-manager": certs.issue(ca, "system:kube-controller-manager"),
        "kube-scheduler": certs.issue(ca, "system:kube-scheduler"),
    }
    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_private=directory / "sa.key",
        sa_public=directory / "sa.pub",
        clients=clients,
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


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK, started together."""

    def __init__(self, toolset: Toolset, workdir: Path) -> None:
        self.toolset = toolset
        self.workdir = workdir
        self.components: list[Component] = []
        self.startup_seconds = 0.0
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise ClusterError("the control plane has not been started")
        return self._cluster

    @classmethod
    def start(cls, toolset: Toolset, *, nodes: int = 2, timeout: float = 120.0) -> ControlPlane:
        """Starts every component and returns once the cluster schedules onto Ready fake nodes.

        On failure the tail of each component's log goes to stderr and everything is stopped.
        """
        if toolset.missing():
            raise ClusterError(
                f"{toolset.directory} lacks {toolset.missing()}: run `make cluster-build`"
            )
        plane = cls(toolset, Path(tempfile.mkdtemp(prefix="corral-k8s-")))
        try:
            plane._boot(nodes, _Deadline(timeout))
        except BaseException:
            plane.print_log_tails(sys.stderr)
            plane.stop()
            raise
        return plane

    def _spawn(self, name: str, args: Sequence[str]) -> Component:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(self.toolset.binary(name)), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        component = Component(name, process, log)
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
                "--profiling=false",
            ],
        )
        return component, f"https://127.0.0.1:{port}/healthz"

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
            _signal_group(component.process, signal.SIGTERM)
            try:
                component.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(component.process, signal.SIGKILL)
                component.process.wait()
            _signal_group(component.process, signal.SIGKILL)
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


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


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
