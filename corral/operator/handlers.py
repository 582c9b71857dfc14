"""kopf handlers, registered into a registry built for one operator's settings.

Rule: handlers are thin. They turn kopf's bodies and indexes into plain views, call the
`Reconciler`, count the outcome, and map API failures to kopf's `TemporaryError`. Handlers run
in kopf's thread pool (they are synchronous; the adapter blocks).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from corral.api.common import parse_duration
from corral.operator.builders import LABEL_INSTANCE, LABEL_WORKLOAD, MANAGED_BY, MANAGER
from corral.operator.kube import KubeError
from corral.operator.metrics import Metrics
from corral.operator.reconciler import (
    Body,
    Reconciler,
    World,
    servers_targeted,
    servers_using_entry,
)
from corral.operator.status import CONFIG_REASONS, CRASH_REASONS, IMAGE_PULL_REASONS, STARTING

GROUP, VERSION = "corral.dev", "v1alpha1"
READY_DEPLOYMENTS = "corral_ready_deployments"
RETRY_DELAY = 5.0
FAULT_REASONS = IMAGE_PULL_REASONS | CRASH_REASONS | CONFIG_REASONS
log = logging.getLogger(__name__)


class _IndexView(Mapping[Any, Any]):
    """A kopf index as a mapping of key to the one value stored under it."""

    def __init__(self, index: kopf.Index[Any, Any]) -> None:
        self._index = index

    def __getitem__(self, key: Any) -> Any:
        store = self._index[key]
        return next(iter(store))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class _Overlay(Mapping[Any, Any]):
    """A mapping with one key replaced (None: removed), for views fresher than the index."""

    def __init__(self, base: Mapping[Any, Any], key: Any, value: Any) -> None:
        self._base, self._key, self._value = base, key, value

    def __getitem__(self, key: Any) -> Any:
        if key == self._key:
            if self._value is None:
                raise KeyError(key)
            return self._value
        return self._base[key]

    def __iter__(self) -> Iterator[Any]:
        keys = [k for k in self._base if k != self._key]
        return iter(keys + ([self._key] if self._value is not None else []))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "labels", "annotations", "generation", "creationTimestamp")
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: copy.deepcopy(meta[k]) for k in keep if k in meta},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _policy_views(index: kopf.Index[Any, Any]) -> Mapping[str, tuple[Body, ...]]:
    return {namespace: tuple(index[namespace]) for namespace in index}


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes as the views the reconciler reads."""

    entries: Mapping[tuple[str, str], Body]
    policies: Mapping[str, tuple[Body, ...]]
    servers: Mapping[tuple[str, str], Body]
    instances: kopf.Index[Any, Any]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Indexes:
        return cls(
            entries=_IndexView(kwargs["corral_entries"]),
            policies=_policy_views(kwargs["corral_policies"]),
            servers=_IndexView(kwargs["corral_servers"]),
            instances=kwargs["corral_instances"],
        )

    def world(self) -> World:
        return World(entries=self.entries, policies=self.policies, servers=self.servers)

    def instances_of(self, namespace: str, server: str) -> list[Body]:
        key = (namespace, server)
        return list(self.instances[key]) if key in self.instances else []


def build_registry(
    reconciler: Reconciler, metrics: Metrics, idle_check: float
) -> kopf.OperatorRegistry:
    """Every handler and index of the operator, in a fresh registry."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    _register_indexes(registry)
    _register_servers(registry, reconciler, metrics, idle_check)
    _register_instances(registry, reconciler, metrics, idle_check)
    _register_entries(registry, reconciler, metrics)
    _register_policies(registry, reconciler, metrics)
    _register_workloads(registry, reconciler, metrics)
    return registry


def _register_indexes(registry: kopf.OperatorRegistry) -> None:
    """Indexers are coroutines so that kopf runs them in its event loop: a synchronous one would
    wait for a free handler thread on every event of every object."""

    @kopf.index(GROUP, VERSION, "mcpcatalogentries", registry=registry, id="corral_entries")
    async def entries(**kw: Any) -> Any:
        return {(kw["namespace"], kw["name"]): _snapshot(kw["body"])}

    @kopf.index(GROUP, VERSION, "accesspolicies", registry=registry, id="corral_policies")
    async def policies(**kw: Any) -> Any:
        return {kw["namespace"]: _snapshot(kw["body"])}

    @kopf.index(GROUP, VERSION, "mcpservers", registry=registry, id="corral_servers")
    async def servers(**kw: Any) -> Any:
        return {(kw["namespace"], kw["name"]): _snapshot(kw["body"])}

    @kopf.index(GROUP, VERSION, "mcpserverinstances", registry=registry, id="corral_instances")
    async def instances(**kw: Any) -> Any:
        return {(kw["namespace"], kw["spec"].get("server")): _snapshot(kw["body"])}

    @kopf.index(
        "apps", "v1", "deployments", registry=registry, id=READY_DEPLOYMENTS,
        labels={MANAGED_BY: MANAGER},
    )  # fmt: skip
    async def ready_deployments(**kw: Any) -> Any:
        return {(kw["namespace"], kw["name"]): _available(kw["body"])}


def _guard(metrics: Metrics, kind: str) -> Any:
    """Time a handler and turn API failures into retries."""

    class _Guard:
        def __enter__(self) -> Any:
            self._timed = metrics.timed(kind)
            return self._timed.__enter__()

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            self._timed.__exit__(exc_type, exc, tb)
            if isinstance(exc, KubeError):
                raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc

    return _Guard()


def _register_servers(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, metrics: Metrics, idle_check: float
) -> None:
    resource = (GROUP, VERSION, "mcpservers")

    def reconcile(**kwargs: Any) -> None:
        body = kwargs["body"]
        indexes = Indexes.of(kwargs)
        metrics.managed.labels("MCPServer").set(len(indexes.servers))
        with _guard(metrics, "MCPServer") as outcome:
            result = reconciler.reconcile_server(
                _snapshot(body),
                indexes.world(),
                fresh=kwargs.get("reason") == "create",
                write_status=kwargs["patch"].status.update,
            )
            if result.problems:
                outcome("invalid")
        if kwargs.get("reason") in ("create", "update"):
            count_entry_servers(kwargs)

    for cause in (kopf.on.create, kopf.on.update, kopf.on.resume):
        cause(*resource, registry=registry, id="reconcile")(reconcile)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def deleted(**kwargs: Any) -> None:
        count_entry_servers(kwargs, leaving=kwargs["name"])

    @kopf.on.event(*resource, registry=registry)
    async def ready_changed(**kwargs: Any) -> None:
        """A Ready Event when the stored status turns Ready, once per transition (none for the
        status an object already had when this process first saw it)."""
        if kwargs.get("type") == "DELETED":
            return
        body, memo = kwargs["body"], kwargs["memo"]
        condition = _ready_condition(body)
        ready = condition is not None and condition.get("status") == "True"
        seen = memo.get("ready")
        memo["ready"] = ready
        if ready and seen is False and condition is not None:
            reconciler.events(
                body, warning=False, reason="Ready", message=str(condition.get("message", ""))
            )

    @kopf.on.event(*resource, registry=registry, when=_starting)
    def starting(**kwargs: Any) -> None:
        with _guard(metrics, "Deployment"):
            reconciler.recheck_starting("MCPServer", kwargs["namespace"], kwargs["name"])

    def count_entry_servers(kwargs: Any, leaving: str | None = None) -> None:
        entry = (kwargs["spec"].get("catalogEntry") or {}).get("name")
        if not entry:
            return
        namespace = kwargs["namespace"]
        indexes = Indexes.of(kwargs)
        servers = [
            s for (ns, name), s in indexes.servers.items() if ns == namespace and name != leaving
        ]
        if leaving is None and (namespace, kwargs["name"]) not in indexes.servers:
            servers.append(_snapshot(kwargs["body"]))
        with _guard(metrics, "MCPCatalogEntry"):
            reconciler.count_entry_servers(namespace, entry, servers)

    @kopf.timer(
        *resource,
        registry=registry,
        interval=idle_check,
        initial_delay=idle_check,
        when=_may_idle,
    )
    def idle(**kwargs: Any) -> None:
        body = kwargs["body"]
        indexes = Indexes.of(kwargs)
        workload, _ = reconciler.workload_for(_snapshot(body), indexes.world())
        if workload is None or workload.effective.idle_timeout <= 0:
            return
        if workload.effective.tenancy == "shared":
            reconcile(**kwargs)


def _ready_condition(body: kopf.Body) -> Mapping[str, Any] | None:
    for condition in (body.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def _starting(body: kopf.Body, **kwargs: Any) -> bool:
    """Whether a server's status says it is starting while its Deployment is ready: kopf writes
    a reconciliation's status after the handler, so a refresh from the Deployment becoming
    ready may have come first and been overwritten."""
    if kwargs.get("type") == "DELETED":
        return False
    starting = any(
        c.get("type") == "Ready" and c.get("reason") == STARTING
        for c in (body.get("status") or {}).get("conditions") or ()
    )
    key = (kwargs.get("namespace"), kwargs.get("name"))
    ready: kopf.Index[Any, bool] = kwargs[READY_DEPLOYMENTS]
    return starting and key in ready and any(ready[key])


def _available(deployment: kopf.Body) -> bool:
    """Whether every desired replica of a Deployment is ready (and it wants some)."""
    desired = int((deployment.get("spec") or {}).get("replicas") or 0)
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return desired > 0 and ready >= desired


def _may_idle(spec: kopf.Spec, **_: Any) -> bool:
    """Whether a server can have an idle timeout: its own, or its catalog entry's default. Only
    those get an idle timer, and with it kopf's finalizer."""
    if spec.get("catalogEntry"):
        return True
    timeout = spec.get("idleTimeout")
    if timeout is None:
        return False
    try:
        return parse_duration(timeout) > 0
    except (TypeError, ValueError):
        return True


def _register_instances(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, metrics: Metrics, idle_check: float
) -> None:
    resource = (GROUP, VERSION, "mcpserverinstances")

    def reconcile(**kwargs: Any) -> None:
        body, namespace, spec = kwargs["body"], kwargs["namespace"], kwargs["spec"]
        if body.get("metadata", {}).get("deletionTimestamp") is not None:
            return
        indexes = Indexes.of(kwargs)
        metrics.managed.labels("MCPServerInstance").set(
            sum(len(indexes.instances[k]) for k in indexes.instances)
        )
        with _guard(metrics, "MCPServerInstance"):
            reconciler.reconcile_instance(_snapshot(body), indexes.world())
            reconciler.update_instance_count(namespace, str(spec.get("server")))

    for cause in (kopf.on.create, kopf.on.update, kopf.on.resume):
        cause(*resource, registry=registry, id="reconcile")(reconcile)
    kopf.timer(
        *resource,
        registry=registry,
        interval=idle_check,
        initial_delay=idle_check,
        when=_not_deleting,
    )(reconcile)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def deleted(**kwargs: Any) -> None:
        namespace, server = kwargs["namespace"], str(kwargs["spec"].get("server"))
        with _guard(metrics, "MCPServerInstance"):
            reconciler.update_instance_count(namespace, server)


def _not_deleting(body: kopf.Body, **_: Any) -> bool:
    return body.get("metadata", {}).get("deletionTimestamp") is None


def _register_entries(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, metrics: Metrics
) -> None:
    resource = (GROUP, VERSION, "mcpcatalogentries")

    def changed(**kwargs: Any) -> None:
        body, namespace, name = kwargs["body"], kwargs["namespace"], kwargs["name"]
        gone = body.get("metadata", {}).get("deletionTimestamp") is not None
        refresh(body, namespace, name, None if gone else _snapshot(body), kwargs)

    def refresh(
        body: kopf.Body, namespace: str, name: str, entry: Body | None, kwargs: Any
    ) -> None:
        indexes = Indexes.of(kwargs)
        key = (namespace, name)
        world = World(
            entries=_Overlay(indexes.entries, key, entry),
            policies=indexes.policies,
            servers=indexes.servers,
        )
        in_namespace = [s for (ns, _), s in indexes.servers.items() if ns == namespace]
        users = servers_using_entry(in_namespace, name)
        with _guard(metrics, "MCPCatalogEntry"):
            if entry is not None:
                reconciler.reconcile_entry(_snapshot(body), in_namespace)
            for server in users:
                reconciler.reconcile_server(server, world)
                for instance in indexes.instances_of(namespace, server["metadata"]["name"]):
                    reconciler.reconcile_instance(instance, world)

    for cause in (kopf.on.create, kopf.on.update):
        cause(*resource, registry=registry, id="reconcile")(changed)

    @kopf.on.resume(*resource, registry=registry, id="reconcile")
    def resumed(**kwargs: Any) -> None:
        namespace = kwargs["namespace"]
        indexes = Indexes.of(kwargs)
        in_namespace = [s for (ns, _), s in indexes.servers.items() if ns == namespace]
        with _guard(metrics, "MCPCatalogEntry"):
            reconciler.reconcile_entry(_snapshot(kwargs["body"]), in_namespace)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def deleted(**kwargs: Any) -> None:
        refresh(kwargs["body"], kwargs["namespace"], kwargs["name"], None, kwargs)


def _register_policies(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, metrics: Metrics
) -> None:
    resource = (GROUP, VERSION, "accesspolicies")

    def fan_out(namespace: str, uid: str, old: Body | None, new: Body | None, kwargs: Any) -> None:
        indexes = Indexes.of(kwargs)
        others = tuple(
            p for p in indexes.policies.get(namespace, ()) if p["metadata"].get("uid") != uid
        )
        mine = (new,) if new is not None else ()
        policies = _Overlay(indexes.policies, namespace, others + mine)
        world = World(entries=indexes.entries, policies=policies, servers=indexes.servers)
        in_namespace = [s for (ns, _), s in indexes.servers.items() if ns == namespace]
        changed = [p for p in (old, new) if p is not None]
        for server in servers_targeted(in_namespace, changed):
            reconciler.reconcile_server(server, world)
            for instance in indexes.instances_of(namespace, server["metadata"]["name"]):
                reconciler.reconcile_instance(instance, world)

    @kopf.on.create(*resource, registry=registry, id="reconcile")
    @kopf.on.update(*resource, registry=registry, id="reconcile")
    def changed(**kwargs: Any) -> None:
        body, namespace, old, uid = (kwargs[k] for k in ("body", "namespace", "old", "uid"))
        with _guard(metrics, "AccessPolicy") as outcome:
            if reconciler.reconcile_policy(_snapshot(body)):
                outcome("invalid")
            previous = _with_meta(old, body) if old else None
            fan_out(namespace, uid, previous, _snapshot(body), kwargs)

    @kopf.on.resume(*resource, registry=registry, id="reconcile")
    def resumed(**kwargs: Any) -> None:
        with _guard(metrics, "AccessPolicy"):
            reconciler.reconcile_policy(_snapshot(kwargs["body"]))

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def deleted(**kwargs: Any) -> None:
        body, namespace, uid = kwargs["body"], kwargs["namespace"], kwargs["uid"]
        with _guard(metrics, "AccessPolicy"):
            fan_out(namespace, uid, _snapshot(body), None, kwargs)


def _with_meta(essence: Mapping[str, Any], body: kopf.Body) -> Body:
    """An old essence (spec and labels) with the identity of the current body."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": essence.get("spec") or {},
    }


def _register_workloads(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, metrics: Metrics
) -> None:
    managed = {MANAGED_BY: MANAGER}

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels=managed, when=_observed)
    def deployment_changed(**kwargs: Any) -> None:
        body, namespace = kwargs["body"], kwargs["namespace"]
        if kwargs.get("type") == "DELETED":
            return
        owner = _controller(body)
        if owner is None:
            return
        with _guard(metrics, "Deployment"):
            reconciler.refresh_status(owner[0], namespace, owner[1], _snapshot(body))

    @kopf.on.event("", "v1", "pods", registry=registry, labels=managed, when=_has_fault)
    def pod_changed(**kwargs: Any) -> None:
        namespace, labels = kwargs["namespace"], kwargs["labels"]
        workload = labels.get(LABEL_WORKLOAD)
        kind = "MCPServerInstance" if LABEL_INSTANCE in labels else "MCPServer"
        if workload is None:
            return
        with _guard(metrics, "Pod"):
            deployment = reconciler.kube.get("apps/v1", "Deployment", namespace, workload)
            if deployment is not None:
                reconciler.refresh_status(kind, namespace, workload, deployment)


def _observed(body: kopf.Body, **_: Any) -> bool:
    """Whether the Deployment controller has seen the Deployment's current generation; before
    that its status says nothing new (a just-applied Deployment has none)."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is not None and observed >= (body.get("metadata") or {}).get("generation", 0)


def _controller(body: kopf.Body) -> tuple[str, str] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller") and str(ref.get("apiVersion", "")).startswith(GROUP + "/"):
            return str(ref["kind"]), str(ref["name"])
    return None


def _has_fault(body: kopf.Body, **_: Any) -> bool:
    """Whether a pod shows a fault worth a status refresh (checked before any thread is used)."""
    status = body.get("status") or {}
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAULT_REASONS:
            return True
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or ()
    )
