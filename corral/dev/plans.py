"""What `corral dev` runs for a set of manifests: one `ServerPlan` per MCPServer.

Rule: pure. A plan holds the server's process (argv, environment) and the shim configuration file
it gets, rendered by the operator's `render_shim_config` (one code path for dev and cluster) and
then pointed at loopback ports. Ports come from a `PortBook` so a server keeps its ports across
reloads. A server that cannot run here (a container image, a missing catalog entry, a secret
reference) gets a plan with `problems` and no process.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from corral.api.policies import AccessPolicy
from corral.api.resolve import EffectiveServer, resolve_server
from corral.api.runtimes import Runtime
from corral.api.servers import MCPServer
from corral.dev.manifests import Manifests
from corral.operator.settings import GatewaySettings, OperatorSettings
from corral.operator.shimconfig import Workload, render_shim_config

LOOPBACK = "127.0.0.1"
SHIM_RELOAD_SECONDS = 0.5
Which = Callable[[str], str | None]


@dataclass(frozen=True)
class Ports:
    """A server's loopback ports: shim, shim admin, and its own process (bridge or HTTP)."""

    shim: int
    admin: int
    server: int


@dataclass(frozen=True)
class Process:
    """A command to supervise. ``env`` is added to the inherited environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    slow_start: str | None = None


@dataclass(frozen=True)
class ServerPlan:
    """Everything `corral dev` runs for one MCPServer."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    catalog_entry: str | None
    runtime_kind: str
    ports: Ports
    upstream: str
    process: Process | None
    shim_config: Mapping[str, Any] | None
    probe_url: str | None
    problems: tuple[str, ...] = ()
    startup_timeout: float = 120.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def route(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Environment:
    """Facts about this machine and run that plans depend on."""

    issuer: str
    jwks: tuple[dict[str, Any], ...]
    audit_url: str
    shim_token: Callable[[str], str]
    spool_dir: Path
    python_bin: Path = Path(sys.executable).parent
    which: Which = shutil.which


class PortBook:
    """Loopback ports per server, kept while the server exists; new ones from ``allocate``."""

    def __init__(self, allocate: Callable[[], int]) -> None:
        self._allocate = allocate
        self._ports: dict[tuple[str, str], Ports] = {}

    def ports(self, key: tuple[str, str]) -> Ports:
        if key not in self._ports:
            self._ports[key] = Ports(self._allocate(), self._allocate(), self._allocate())
        return self._ports[key]

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        kept = set(keep)
        for key in [k for k in self._ports if k not in kept]:
            del self._ports[key]


def plan_servers(manifests: Manifests, ports: PortBook, env: Environment) -> list[ServerPlan]:
    """A plan for every MCPServer in ``manifests``."""
    plans = [_plan(server, manifests, ports, env) for server in manifests.servers]
    ports.forget(p.key for p in plans)
    return plans


def _plan(server: MCPServer, manifests: Manifests, book: PortBook, env: Environment) -> ServerPlan:
    namespace = server.metadata.namespace or "default"
    name = server.metadata.name or ""
    ref = server.spec.catalog_entry
    entry = manifests.catalog_entry(namespace, ref.name) if ref is not None else None
    resolution = resolve_server(server.spec, entry.spec if entry is not None else None)
    ports = book.ports((namespace, name))
    labels = dict(server.metadata.labels or {})
    catalog_name = ref.name if ref is not None else None
    problems = list(resolution.problems)
    effective = resolution.server
    process: Process | None = None
    upstream = ""
    kind = "unknown"
    if effective is not None:
        kind = effective.runtime.kind
        problems.extend(_local_problems(effective))
        process, upstream = _process(effective.runtime, ports, env, problems)
    shim_config = None
    if effective is not None and not problems:
        workload = Workload(namespace, name, labels, catalog_name, server.spec, effective)
        shim_config = _shim_config(workload, manifests.policies, ports, upstream, env, problems)
    return ServerPlan(
        namespace=namespace,
        name=name,
        labels=labels,
        catalog_entry=catalog_name,
        runtime_kind=kind,
        ports=ports,
        upstream=upstream,
        process=process if not problems else None,
        shim_config=shim_config if not problems else None,
        probe_url=upstream or None,
        problems=tuple(problems),
        startup_timeout=float(effective.startup_timeout) if effective is not None else 120.0,
    )


def _local_problems(effective: EffectiveServer) -> Iterable[str]:
    if effective.tenancy == "perUser":
        yield "tenancy perUser needs a cluster (one pod per user); corral dev runs shared servers"
    for var in effective.env:
        if var.value_from is not None:
            yield (
                f"env {var.name!r} comes from a Secret or ConfigMap, which corral dev cannot "
                "read: give a literal value in the manifest for local use"
            )
    if effective.files:
        yield "files need a pod filesystem; corral dev does not write server files"


def _process(
    runtime: Runtime, ports: Ports, env: Environment, problems: list[str]
) -> tuple[Process | None, str]:
    bridge_url = f"http://{LOOPBACK}:{ports.server}/mcp"
    if runtime.remote is not None:
        return None, runtime.remote.url
    if runtime.container is not None:
        container = runtime.container
        if not container.command:
            problems.append(
                f"runtime container (image {container.image}) needs a cluster: corral dev runs "
                "no images. Give runtime.container.command to run a local streamable-HTTP "
                "command, or use npx, uvx, stdio or remote"
            )
            return None, ""
        argv = (*container.command, *(container.args or ()))
        url = f"http://{LOOPBACK}:{ports.server}{container.path}"
        return Process(argv, {"PORT": str(ports.server), "HOST": LOOPBACK}), url
    stdio, slow = _stdio_command(runtime, env, problems)
    if stdio is None:
        return None, ""
    corral = str(env.python_bin / "corral")
    bridge = (corral, "bridge", "--host", LOOPBACK, "--port", str(ports.server), "--path", "/mcp")
    return Process((*bridge, "--", *stdio), slow_start=slow), bridge_url


def _stdio_command(
    runtime: Runtime, env: Environment, problems: list[str]
) -> tuple[tuple[str, ...] | None, str | None]:
    if runtime.npx is not None:
        npx = env.which("npx")
        if npx is None:
            problems.append("runtime npx needs Node.js: install nodejs and npm (npx on PATH)")
            return None, None
        package = runtime.npx.package
        argv = (npx, "--yes", package, *(runtime.npx.args or ()))
        return argv, f"npx may download {package} on first start"
    if runtime.uvx is not None:
        return _uvx_command(runtime.uvx.package, tuple(runtime.uvx.args or ()), env, problems)
    if runtime.stdio is not None:
        return (*runtime.stdio.command, *(runtime.stdio.args or ())), None
    return None, None


def _uvx_command(
    package: str, args: tuple[str, ...], env: Environment, problems: list[str]
) -> tuple[tuple[str, ...] | None, str | None]:
    """The installed console script when this Python has a matching distribution (offline and
    fast), else ``uvx``."""
    script = installed_script(package, env.python_bin)
    if script is not None:
        return (str(script), *args), None
    uvx = env.which("uvx") or _existing(env.python_bin / "uvx")
    if uvx is None:
        problems.append(
            f"runtime uvx: {package} is not installed here and uvx is missing: "
            "install uv (`pip install uv`) or the package itself"
        )
        return None, None
    return (uvx, package, *args), f"uvx may download {package} on first start"


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def installed_script(package: str, bin_dir: Path) -> Path | None:
    """The console script of ``package`` if an installed version satisfies its specifier."""
    try:
        requirement = Requirement(package)
        distribution = importlib.metadata.distribution(requirement.name)
    except (InvalidRequirement, importlib.metadata.PackageNotFoundError):
        return None
    if not requirement.specifier.contains(distribution.version, prereleases=True):
        return None
    scripts = [e.name for e in distribution.entry_points if e.group == "console_scripts"]
    preferred = sorted(scripts, key=lambda s: s != requirement.name)
    for name in preferred:
        path = bin_dir / name
        if _existing(path):
            return path
    return None


def _shim_config(
    workload: Workload,
    policies: Iterable[AccessPolicy],
    ports: Ports,
    upstream: str,
    env: Environment,
    problems: list[str],
) -> dict[str, Any] | None:
    gateway = GatewaySettings(issuer=env.issuer, jwks=env.jwks, audit_url=env.audit_url)
    rendered = render_shim_config(workload, policies, OperatorSettings(gateway=gateway))
    if rendered.config is None:
        problems.extend(rendered.problems)
        return None
    config = dict(rendered.config)
    token = env.shim_token(f"{workload.namespace}/{workload.server}")
    spool = env.spool_dir / f"{workload.namespace}.{workload.server}"
    config["listen"] = {"host": LOOPBACK, "port": ports.shim}
    config["admin"] = {"host": LOOPBACK, "port": ports.admin}
    config["upstream"] = {**config["upstream"], "url": upstream}
    audit = dict(config["audit"])
    audit["sink"] = {**audit["sink"], "token": {"value": token}, "spoolDir": str(spool)}
    config["audit"] = audit
    config["reloadIntervalSeconds"] = SHIM_RELOAD_SECONDS
    return config
