"""Desired Kubernetes objects for one workload: ConfigMaps, Deployment, Service, NetworkPolicy and
PodDisruptionBudget.

Rule: pure functions from a `Workload`, its rendered shim configuration and the settings to plain
dicts ready for server-side apply. No I/O, no clock. The server container gets the server's env
and files only; the shim gets its configuration and credentials only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from corral.api.common import EnvVar, FileSpec, KeyRef
from corral.api.resolve import EffectiveServer
from corral.api.servers import ResourceRequirements
from corral.operator.settings import ADMIN_PORT, BRIDGE_PORT, SHIM_PORT, OperatorSettings
from corral.operator.shimconfig import (
    AUDIT_TOKEN_DIR,
    FILTER_SECRET_KEY,
    FILTER_SECRETS_DIR,
    SPOOL_DIR,
    TOKEN_EXCHANGE_DIR,
    TOKEN_EXCHANGE_KEYS,
    UPSTREAM_HEADERS_DIR,
    Workload,
    header_file,
    secret_headers,
)

Object = dict[str, Any]

GROUP = "corral.dev"
CONFIG_HASH = f"{GROUP}/config-hash"
WAKE_REQUESTED = f"{GROUP}/wake-requested"
LABEL_SERVER = f"{GROUP}/server"
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_WORKLOAD = f"{GROUP}/workload"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "corral-operator"
SHIM_CONFIG_KEY = "config.json"
SHIM_CONFIG_DIR = "/etc/corral/shim"
AUDIT_TOKEN_VOLUME = "audit-token"
TOKEN_EXCHANGE_VOLUME = "token-exchange"
UPSTREAM_HEADERS_VOLUME = "upstream-headers"
SHIM_SECRET_MOUNTS = {
    AUDIT_TOKEN_VOLUME: str(AUDIT_TOKEN_DIR),
    TOKEN_EXCHANGE_VOLUME: str(TOKEN_EXCHANGE_DIR),
    UPSTREAM_HEADERS_VOLUME: str(UPSTREAM_HEADERS_DIR),
}
RUN_AS = 65532
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
LINK_LOCAL_AND_METADATA = ("169.254.0.0/16", "100.64.0.0/10")
PRIVATE_RANGES_V6 = ("fc00::/7", "fe80::/10")


@dataclass(frozen=True)
class Owner:
    """The object that owns everything built (MCPServer or MCPServerInstance)."""

    kind: str
    name: str
    uid: str
    api_version: str = f"{GROUP}/v1alpha1"

    def reference(self) -> Object:
        """Its ownerReference: the controller, blocking owner deletion until dependents go."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Built:
    """Every object of one workload, and those it must not have (to delete by name)."""

    objects: tuple[Object, ...]
    absent: tuple[tuple[str, str, str], ...]

    def of_kind(self, kind: str) -> Object:
        """The single built object of `kind`."""
        return next(o for o in self.objects if o["kind"] == kind)


def selector_labels(workload: Workload) -> dict[str, str]:
    """Labels selecting the workload's pods."""
    return {LABEL_WORKLOAD: workload.name, LABEL_SERVER: workload.server}


def common_labels(workload: Workload) -> dict[str, str]:
    """Labels on every object built for the workload."""
    labels = {
        "app.kubernetes.io/name": "mcp-server",
        "app.kubernetes.io/instance": workload.name,
        "app.kubernetes.io/component": "mcp-server",
        MANAGED_BY: MANAGER,
        **selector_labels(workload),
    }
    if workload.instance is not None:
        labels[LABEL_INSTANCE] = workload.instance
    return labels


def _metadata(workload: Workload, owner: Owner, name: str) -> Object:
    return {
        "name": name,
        "namespace": workload.namespace,
        "labels": common_labels(workload),
        "ownerReferences": [owner.reference()],
    }


def shim_config_name(workload: Workload) -> str:
    """The ConfigMap holding the shim configuration."""
    return f"{workload.name}-shim"


def files_name(workload: Workload) -> str:
    """The ConfigMap holding literal server files."""
    return f"{workload.name}-files"


def shim_config_text(config: Object) -> str:
    """The configuration as stored in the ConfigMap (stable JSON)."""
    return orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def build_shim_config_map(workload: Workload, owner: Owner, config: Object) -> Object:
    """The ConfigMap the shim reads (and re-reads on change)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(workload, owner, shim_config_name(workload)),
        "data": {SHIM_CONFIG_KEY: shim_config_text(config)},
    }


def build_files_config_map(workload: Workload, owner: Owner) -> Object | None:
    """Literal server files, mounted into the server container only; None when there are none."""
    data = {
        _file_key(index): f.content
        for index, f in enumerate(workload.effective.files)
        if f.content is not None
    }
    if not data:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(workload, owner, files_name(workload)),
        "data": data,
    }


def _file_key(index: int) -> str:
    return f"file-{index}"


def config_hash(*parts: Object | None) -> str:
    """A digest of everything a pod reads at start: changes roll the pods."""
    digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:16]


def _without_policies(config: Object) -> Object:
    return {key: value for key, value in config.items() if key != "policies"}


def _security_context() -> Object:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context() -> Object:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _key_ref(ref: KeyRef) -> Object:
    return {"name": ref.name, "key": ref.key, "optional": ref.optional}


def _env(var: EnvVar) -> Object:
    if var.value is not None or var.value_from is None:
        return {"name": var.name, "value": var.value or ""}
    source = var.value_from
    if source.secret_key_ref is not None:
        return {"name": var.name, "valueFrom": {"secretKeyRef": _key_ref(source.secret_key_ref)}}
    assert source.config_map_key_ref is not None
    return {
        "name": var.name,
        "valueFrom": {"configMapKeyRef": _key_ref(source.config_map_key_ref)},
    }


def _file_source(workload: Workload, index: int, spec: FileSpec) -> Object:
    item = {"path": _file_key(index), "mode": spec.mode}
    if spec.content is not None:
        return {
            "configMap": {"name": files_name(workload), "items": [{**item, "key": item["path"]}]}
        }
    assert spec.value_from is not None
    secret = spec.value_from.secret_key_ref
    if secret is not None:
        return {
            "secret": {
                "name": secret.name,
                "optional": secret.optional,
                "items": [{**item, "key": secret.key}],
            }
        }
    config_map = spec.value_from.config_map_key_ref
    assert config_map is not None
    return {
        "configMap": {
            "name": config_map.name,
            "optional": config_map.optional,
            "items": [{**item, "key": config_map.key}],
        }
    }


def _resources(resources: ResourceRequirements | None, default: Object) -> Object:
    if resources is None:
        return default
    return resources.model_dump(by_alias=True, exclude_none=True, mode="json")


def server_command(effective: EffectiveServer) -> list[str] | None:
    """The server container's command: bridged runtimes run `corral bridge -- CMD`."""
    runtime = effective.runtime
    if runtime.npx is not None:
        stdio = ["npx", "--yes", runtime.npx.package, *(runtime.npx.args or ())]
    elif runtime.uvx is not None:
        stdio = ["uvx", runtime.uvx.package, *(runtime.uvx.args or ())]
    elif runtime.stdio is not None:
        stdio = [*runtime.stdio.command, *(runtime.stdio.args or ())]
    else:
        return None
    bridge = ["corral", "bridge", "--host", "127.0.0.1", "--port", str(BRIDGE_PORT)]
    return [*bridge, "--path", "/mcp", "--", *stdio]


def _server_container(workload: Workload, settings: OperatorSettings) -> Object | None:
    effective = workload.effective
    runtime = effective.runtime
    if runtime.remote is not None:
        return None
    env = [_env(v) for v in effective.env]
    container: Object = {"name": "server", "imagePullPolicy": settings.images.pull_policy}
    if runtime.container is not None:
        container["image"] = runtime.container.image
        if runtime.container.command:
            container["command"] = list(runtime.container.command)
        if runtime.container.args:
            container["args"] = list(runtime.container.args)
        container["ports"] = [
            {"name": "server", "containerPort": runtime.container.port, "protocol": "TCP"}
        ]
    else:
        image = runtime.stdio.image if runtime.stdio is not None else settings.images.runner
        container["image"] = image
        container["command"] = server_command(effective)
        env = [
            {"name": "HOME", "value": "/tmp/home"},
            {"name": "npm_config_cache", "value": "/tmp/npm"},
            {"name": "UV_CACHE_DIR", "value": "/tmp/uv"},
            *env,
        ]
    container["env"] = env
    mounts: list[Object] = [{"name": "server-tmp", "mountPath": "/tmp"}]
    mounts += [
        {
            "name": "server-files",
            "mountPath": spec.path,
            "subPath": _file_key(index),
            "readOnly": True,
        }
        for index, spec in enumerate(effective.files)
    ]
    container["volumeMounts"] = mounts
    container["resources"] = _resources(effective.resources, settings.resources.server)
    container["securityContext"] = _security_context()
    return container


def _shim_secret_volumes(workload: Workload, settings: OperatorSettings) -> list[Object]:
    volumes = [
        {
            "name": f"filter-{item.name}",
            "secret": {
                "secretName": item.secret_ref.name,
                "items": [{"key": FILTER_SECRET_KEY, "path": FILTER_SECRET_KEY}],
            },
        }
        for item in workload.spec.filters or ()
        if item.secret_ref is not None
    ]
    token_secret = settings.gateway.audit_token_secret
    if settings.gateway.audit_url and token_secret:
        volumes.append(
            {
                "name": AUDIT_TOKEN_VOLUME,
                "secret": {
                    "secretName": token_secret,
                    "items": [{"key": "token", "path": "token"}],
                },
            }
        )
    exchange = workload.spec.token_exchange
    if exchange is not None:
        volumes.append(
            {
                "name": TOKEN_EXCHANGE_VOLUME,
                "secret": {
                    "secretName": exchange.client_secret_ref.name,
                    "items": [{"key": key, "path": key} for key in TOKEN_EXCHANGE_KEYS],
                },
            }
        )
    headers = secret_headers(workload.effective)
    if headers:
        sources = [
            {
                "secret": {
                    "name": ref.name,
                    "optional": ref.optional,
                    "items": [{"key": ref.key, "path": header_file(i)}],
                }
            }
            for i, _, ref in headers
        ]
        volumes.append({"name": UPSTREAM_HEADERS_VOLUME, "projected": {"sources": sources}})
    return volumes


def _shim_container(
    workload: Workload, settings: OperatorSettings, secrets: list[Object]
) -> Object:
    mounts: list[Object] = [
        {"name": "shim-config", "mountPath": SHIM_CONFIG_DIR, "readOnly": True},
        {"name": "shim-spool", "mountPath": str(SPOOL_DIR)},
    ]
    for volume in secrets:
        path = SHIM_SECRET_MOUNTS.get(
            volume["name"], str(FILTER_SECRETS_DIR / volume["name"].removeprefix("filter-"))
        )
        mounts.append({"name": volume["name"], "mountPath": path, "readOnly": True})

    def probe(path: str, failures: int) -> Object:
        return {
            "httpGet": {"path": path, "port": "admin"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "name": "shim",
        "image": settings.images.shim,
        "imagePullPolicy": settings.images.pull_policy,
        "command": ["corral", "shim", "--config", f"{SHIM_CONFIG_DIR}/{SHIM_CONFIG_KEY}"],
        "args": ["--log-json"],
        "ports": [
            {"name": "mcp", "containerPort": SHIM_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": probe("/healthz", 3),
        "readinessProbe": {**probe("/readyz", 3), "periodSeconds": 5},
        "startupProbe": {**probe("/healthz", 60), "periodSeconds": 2},
        "volumeMounts": mounts,
        "resources": settings.resources.shim,
        "securityContext": _security_context(),
    }


def _scheduling(workload: Workload) -> Object:
    spec = workload.spec
    fields: Object = {
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "runtimeClassName": spec.runtime_class_name,
        "imagePullSecrets": [{"name": s.name} for s in spec.image_pull_secrets]
        if spec.image_pull_secrets
        else None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def build_pod_spec(workload: Workload, settings: OperatorSettings) -> Object:
    """The pod: the server container (unless remote) and the shim sidecar, both restricted."""
    secrets = _shim_secret_volumes(workload, settings)
    server = _server_container(workload, settings)
    volumes: list[Object] = [
        {"name": "shim-config", "configMap": {"name": shim_config_name(workload)}},
        {"name": "shim-spool", "emptyDir": {"sizeLimit": "128Mi"}},
        *secrets,
    ]
    containers = [_shim_container(workload, settings, secrets)]
    if server is not None:
        containers.insert(0, server)
        volumes.append({"name": "server-tmp", "emptyDir": {"sizeLimit": "1Gi"}})
        files = workload.effective.files
        if files:
            sources = [_file_source(workload, i, f) for i, f in enumerate(files)]
            volumes.append({"name": "server-files", "projected": {"sources": sources}})
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security_context(),
        "containers": containers,
        "volumes": volumes,
        **_scheduling(workload),
    }


def build_deployment(
    workload: Workload,
    owner: Owner,
    settings: OperatorSettings,
    *,
    replicas: int,
    config: Object,
    files: Object | None,
) -> Object:
    """The Deployment; its pod template carries the config hash, so any change rolls pods.

    Policies are left out of the hash: the shim reloads its configuration file in place.
    """
    pod_spec = build_pod_spec(workload, settings)
    digest = config_hash(pod_spec, _without_policies(config), files)
    labels = common_labels(workload)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(workload, owner, workload.name),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(workload)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": {CONFIG_HASH: digest}},
                "spec": pod_spec,
            },
        },
    }


def build_service(workload: Workload, owner: Owner) -> Object:
    """A ClusterIP Service for the shim's MCP port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload, owner, workload.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(workload),
            "ports": [{"name": "mcp", "port": SHIM_PORT, "targetPort": "mcp", "protocol": "TCP"}],
        },
    }


def endpoint(workload: Workload) -> str:
    """The in-cluster URL of the shim."""
    return f"http://{workload.name}.{workload.namespace}.svc:{SHIM_PORT}/mcp"


def _gateway_peer(settings: OperatorSettings) -> Object:
    peer: Object = {"podSelector": {"matchLabels": dict(settings.gateway.pod_labels)}}
    namespace = settings.gateway.namespace
    peer["namespaceSelector"] = (
        {"matchLabels": {"kubernetes.io/metadata.name": namespace}} if namespace else {}
    )
    return peer


def _egress_allowed(workload: Workload) -> tuple[list[str], list[str]]:
    rules = (workload.spec.egress.allow or ()) if workload.spec.egress else ()
    cidrs = [r for r in rules if "/" in r]
    return [c for c in cidrs if ":" not in c], [c for c in cidrs if ":" in c]


def build_network_policy(workload: Workload, owner: Owner, settings: OperatorSettings) -> Object:
    """Ingress only from gateway pods to the shim port; egress to DNS, the gateway and the public
    internet, never to private, link-local or metadata ranges unless `egress.allow` names them."""
    allowed_v4, allowed_v6 = _egress_allowed(workload)
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    egress: list[Object] = [
        {
            "to": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": dns_ports,
        },
        {"to": [_gateway_peer(settings)]},
        {
            "to": [
                {
                    "ipBlock": {
                        "cidr": "0.0.0.0/0",
                        "except": [*PRIVATE_RANGES, *LINK_LOCAL_AND_METADATA],
                    }
                },
                {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_RANGES_V6)}},
            ]
        },
    ]
    if allowed_v4 or allowed_v6:
        egress.append({"to": [{"ipBlock": {"cidr": c}} for c in (*allowed_v4, *allowed_v6)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(workload, owner, workload.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(workload)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [_gateway_peer(settings)],
                    "ports": [{"protocol": "TCP", "port": SHIM_PORT}],
                }
            ],
            "egress": egress,
        },
    }


def build_pdb(workload: Workload, owner: Owner) -> Object:
    """At most one pod of a multi-replica server disrupted at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(workload, owner, workload.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(workload)}},
    }


def build_all(
    workload: Workload,
    owner: Owner,
    settings: OperatorSettings,
    *,
    replicas: int,
    config: Object,
) -> Built:
    """Every object the workload needs at `replicas`, and those to remove (by kind and name)."""
    files = build_files_config_map(workload, owner)
    objects: list[Object] = [build_shim_config_map(workload, owner, config)]
    absent: list[tuple[str, str, str]] = []
    if files is not None:
        objects.append(files)
    else:
        absent.append(("v1", "ConfigMap", files_name(workload)))
    objects += [
        build_deployment(workload, owner, settings, replicas=replicas, config=config, files=files),
        build_service(workload, owner),
        build_network_policy(workload, owner, settings),
    ]
    if workload.effective.replicas > 1:
        objects.append(build_pdb(workload, owner))
    else:
        absent.append(("policy/v1", "PodDisruptionBudget", workload.name))
    return Built(tuple(objects), tuple(absent))
