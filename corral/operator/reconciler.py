"""Reconciliation: from a resource and what it references to applied objects and a status.

Rule: one place that sequences parse, resolve, render, build, apply and observe; the pure work
is done by `corral.api.resolve`, `shimconfig`, `builders` and `status`, and every API call goes
through `kube.Kube`. Nothing here imports kopf: handlers pass in plain views of kopf's indexes,
and an `EventSink` for Kubernetes Events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from corral.api.catalog import MCPCatalogEntrySpec
from corral.api.conditions import Condition
from corral.api.instances import MCPServerInstanceSpec
from corral.api.policies import AccessPolicy
from corral.api.policy import validate_policy
from corral.api.resolve import resolve_server
from corral.api.servers import MCPServerSpec
from corral.operator import builders, status
from corral.operator.builders import WAKE_REQUESTED, Owner
from corral.operator.kube import Kube
from corral.operator.settings import OperatorSettings
from corral.operator.shimconfig import Target, Workload, render_shim_config, targets

API_VERSION = "corral.dev/v1alpha1"
Body = Mapping[str, Any]
SHARED_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
)


StatusWriter = Callable[[dict[str, Any]], None]
"""Writes a status patch; the handlers pass one that joins kopf's own patch of the object."""


class EventSink(Protocol):
    """Posts a Kubernetes Event about an object."""

    def __call__(self, body: Body, *, warning: bool, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class World:
    """What a reconciliation may read besides the object itself (views of kopf's indexes)."""

    entries: Mapping[tuple[str, str], Body]
    policies: Mapping[str, tuple[Body, ...]]
    servers: Mapping[tuple[str, str], Body]

    def entry(self, namespace: str, name: str) -> MCPCatalogEntrySpec | None:
        body = self.entries.get((namespace, name))
        if body is None:
            return None
        return MCPCatalogEntrySpec.model_validate(body.get("spec") or {})

    def access_policies(self, namespace: str) -> list[AccessPolicy]:
        return [parse_policy(b) for b in self.policies.get(namespace, ())]


def parse_policy(body: Body) -> AccessPolicy:
    """An AccessPolicy from a watched body (status and unknown metadata left aside)."""
    meta = body.get("metadata") or {}
    return AccessPolicy.model_validate(
        {
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "generation": meta.get("generation"),
            },
            "spec": body.get("spec") or {},
        }
    )


def _meta(body: Body) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _validation_problems(error: ValidationError) -> tuple[str, ...]:
    return tuple(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
        for e in error.errors()
    )


@dataclass(frozen=True)
class Outcome:
    """What a reconciliation did and the status it wrote."""

    problems: tuple[str, ...]
    ready: bool
    status: dict[str, Any]


@dataclass
class Reconciler:
    """Reconciles MCPServers, MCPServerInstances, catalog entries and policies."""

    settings: OperatorSettings
    kube: Kube
    clock: Callable[[], datetime]
    events: EventSink

    def workload_for(
        self, server: Body, world: World, *, instance: Body | None = None
    ) -> tuple[Workload | None, tuple[str, ...]]:
        """The workload a server (or one instance of it) runs, or the problems preventing it."""
        meta = _meta(server)
        namespace, name = meta["namespace"], meta["name"]
        try:
            spec = MCPServerSpec.model_validate(server.get("spec") or {})
        except ValidationError as error:
            return None, _validation_problems(error)
        entry_name = spec.catalog_entry.name if spec.catalog_entry is not None else None
        entry = world.entry(namespace, entry_name) if entry_name else None
        resolution = resolve_server(spec, entry)
        if resolution.server is None or resolution.problems:
            return None, resolution.problems
        instance_meta = _meta(instance) if instance is not None else {}
        owner = None
        if instance is not None:
            owner = MCPServerInstanceSpec.model_validate(instance.get("spec") or {}).owner.username
        workload = Workload(
            namespace=namespace,
            server=name,
            labels=dict(meta.get("labels") or {}),
            catalog_entry=entry_name,
            spec=spec,
            effective=resolution.server,
            instance=instance_meta.get("name"),
            owner=owner,
        )
        return workload, ()

    def reconcile_server(
        self,
        body: Body,
        world: World,
        *,
        fresh: bool = False,
        write_status: StatusWriter | None = None,
    ) -> Outcome:
        """Apply a server's objects (shared tenancy) and write its status (through
        `write_status` when given, else a patch of its status). `fresh`: the server was just
        created, so there is nothing stale to delete."""
        meta = _meta(body)
        namespace, name = meta["namespace"], meta["name"]
        workload, problems = self.workload_for(body, world)
        if workload is not None and workload.effective.tenancy == "perUser":
            if not fresh:
                self._remove_shared(namespace, name)
            return self._write_per_user_status(body, workload, write_status)
        asleep = False
        if workload is not None:
            activity = status.last_activity(
                meta.get("creationTimestamp"),
                (body.get("status") or {}).get("lastActivity"),
                (meta.get("annotations") or {}).get(WAKE_REQUESTED),
            )
            asleep = status.is_idle(activity, workload.effective.idle_timeout, self.clock())
        owner = Owner("MCPServer", name, meta["uid"])
        outcome = self._run(
            body, owner, workload, problems, world, asleep=asleep, fresh=fresh, write=write_status
        )
        self._note_sleep(body, asleep)
        return outcome

    def reconcile_instance(self, body: Body, world: World) -> Outcome | None:
        """Run one user's instance; delete it once idle. None when it was deleted."""
        meta = _meta(body)
        namespace, name = meta["namespace"], meta["name"]
        server_name = (body.get("spec") or {}).get("server", "")
        server = world.servers.get((namespace, server_name))
        owner = Owner("MCPServerInstance", name, meta["uid"])
        if server is None:
            problem = (
                f"MCPServer {server_name!r} not found in {namespace}: the instance has no parent"
            )
            return self._run(body, owner, None, (problem,), world, asleep=False)
        workload, problems = self.workload_for(server, world, instance=body)
        if workload is not None and workload.effective.tenancy != "perUser":
            workload, problems = None, (f"MCPServer {server_name!r} is not tenancy perUser",)
        if workload is not None:
            activity = status.last_activity(
                meta.get("creationTimestamp"), (body.get("status") or {}).get("lastActivity")
            )
            if status.is_idle(activity, workload.effective.idle_timeout, self.clock()):
                self.events(
                    server,
                    warning=False,
                    reason="InstanceExpired",
                    message=f"deleted idle instance {name} of {workload.owner}",
                )
                self.kube.delete(API_VERSION, "MCPServerInstance", namespace, name)
                return None
        return self._run(body, owner, workload, problems, world, asleep=False)

    def _run(
        self,
        body: Body,
        owner: Owner,
        workload: Workload | None,
        problems: tuple[str, ...],
        world: World,
        *,
        asleep: bool,
        fresh: bool = False,
        write: StatusWriter | None = None,
    ) -> Outcome:
        meta = _meta(body)
        namespace = meta["namespace"]
        deployment = None
        replicas = 0
        if workload is not None:
            rendered = render_shim_config(workload, world.access_policies(namespace), self.settings)
            problems = rendered.problems
            if rendered.config is not None:
                replicas = 0 if asleep else workload.effective.replicas
                built = builders.build_all(
                    workload, owner, self.settings, replicas=replicas, config=rendered.config
                )
                applied = self.kube.apply_all(built.objects)
                deployment = next(
                    a
                    for o, a in zip(built.objects, applied, strict=True)
                    if o["kind"] == "Deployment"
                )
                for api_version, kind, name in () if fresh else built.absent:
                    self.kube.delete(api_version, kind, namespace, name)
                deployment = self._latest(deployment)
        observed = status.Observed(
            generation=meta.get("generation"),
            problems=problems,
            deployment=deployment,
            desired_replicas=replicas,
            asleep=asleep,
        )
        return self._write_status(body, owner.kind, observed, workload, write)

    def _latest(self, deployment: dict[str, Any]) -> dict[str, Any]:
        """The Deployment as it is now: the other applies may have taken long enough for its
        pods to become ready, and the status written next must not say otherwise."""
        meta = _meta(deployment)
        current = self.kube.get("apps/v1", "Deployment", meta["namespace"], meta["name"])
        return current if current is not None else deployment

    def recheck_starting(self, kind: str, namespace: str, name: str) -> None:
        """Refresh a starting owner's status when its Deployment is ready after all: the refresh
        for that change may have landed before the reconciliation's own status (written after
        the apply), which then overwrote it."""
        deployment = self.kube.get("apps/v1", "Deployment", namespace, name, cached=True)
        if deployment is None:
            return
        desired = int((deployment.get("spec") or {}).get("replicas") or 0)
        if desired > 0 and status.ready_replicas(deployment) >= desired:
            self.refresh_status(kind, namespace, name, deployment)

    def _status_writer(self, kind: str, body: Body, write: StatusWriter | None) -> StatusWriter:
        if write is not None:
            return write
        meta = _meta(body)

        def patch(status: dict[str, Any]) -> None:
            self.kube.patch_status(API_VERSION, kind, meta["namespace"], meta["name"], status)

        return patch

    def _write_status(
        self,
        body: Body,
        kind: str,
        observed: status.Observed,
        workload: Workload | None,
        write: StatusWriter | None = None,
    ) -> Outcome:
        old = (body.get("status") or {}).get("conditions")
        conditions = status.merge_conditions(old, status.desired_conditions(observed), self.clock())
        patch: dict[str, Any] = {
            "observedGeneration": observed.generation,
            "conditions": status.wire_conditions(conditions),
            "readyReplicas": status.ready_replicas(observed.deployment),
        }
        if workload is not None and not observed.problems:
            patch["endpoint"] = builders.endpoint(workload)
            if kind == "MCPServer":
                patch["tenancy"] = workload.effective.tenancy
        self._status_writer(kind, body, write)(patch)
        self._post_transitions(kind, body, old, conditions)
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return Outcome(observed.problems, ready, patch)

    def _post_transitions(self, kind: str, body: Body, old: Any, conditions: list[Any]) -> None:
        """Events for what a status write changes. An MCPServer's Ready Event is posted from
        its watched status instead (`handlers`): kopf writes a reconciliation's status after the
        handler, so a refresh may see the same transition once more."""
        changed = set(status.changed_status(old, conditions))
        if kind == "MCPServer":
            changed.discard("Ready")
        for condition in conditions:
            if condition.type == "ConfigValid" and "ConfigValid" in changed:
                if condition.status == "False":
                    self.events(
                        body, warning=True, reason="InvalidConfig", message=condition.message
                    )
            elif condition.type == "Degraded" and "Degraded" in changed:
                if condition.status == "True":
                    self.events(
                        body, warning=True, reason=condition.reason, message=condition.message
                    )
            elif condition.type == "Ready" and "Ready" in changed and condition.status == "True":
                self.events(body, warning=False, reason="Ready", message=condition.message)

    def refresh_status(self, kind: str, namespace: str, name: str, deployment: Body) -> None:
        """Re-derive an owner's conditions after its Deployment or Pods changed; pods are listed
        only while replicas are missing, and nothing is written when nothing changed."""
        owner = self.kube.get(API_VERSION, kind, namespace, name, cached=True)
        if owner is None:
            return
        old_status = owner.get("status") or {}
        old = old_status.get("conditions")
        if any(c.type == "ConfigValid" and c.status == "False" for c in _parse(old)):
            return
        desired = int((deployment.get("spec") or {}).get("replicas") or 0)
        pods: tuple[Body, ...] = ()
        if status.ready_replicas(deployment) < desired:
            labels = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
            pods = tuple(self.kube.list("v1", "Pod", namespace, labels))
        observed = status.Observed(
            generation=old_status.get("observedGeneration"),
            deployment=deployment,
            pods=pods,
            desired_replicas=desired,
            asleep=desired == 0,
        )
        conditions = status.merge_conditions(old, status.desired_conditions(observed), self.clock())
        patch = {
            "conditions": status.wire_conditions(conditions),
            "readyReplicas": status.ready_replicas(deployment),
        }
        unchanged = patch["conditions"] == status.wire_conditions(_parse(old))
        if unchanged and old_status.get("readyReplicas") == patch["readyReplicas"]:
            return
        self.kube.patch_status(API_VERSION, kind, namespace, name, patch)
        self._post_transitions(kind, owner, old, conditions)

    def _note_sleep(self, body: Body, asleep: bool) -> None:
        was_asleep = any(
            c.get("type") == "Ready" and c.get("reason") == "ScaledToZero"
            for c in (body.get("status") or {}).get("conditions") or ()
        )
        if asleep and not was_asleep:
            self.events(body, warning=False, reason="ScaledToZero", message="idle: scaled to 0")
        elif was_asleep and not asleep:
            self.events(body, warning=False, reason="Woken", message="activity: scaled up")

    def _remove_shared(self, namespace: str, name: str) -> None:
        for api_version, kind in SHARED_KINDS:
            self.kube.delete(api_version, kind, namespace, name)

    def _write_per_user_status(
        self, body: Body, workload: Workload, write: StatusWriter | None
    ) -> Outcome:
        meta = _meta(body)
        count = self.count_instances(meta["namespace"], meta["name"])
        conditions = status.merge_conditions(
            (body.get("status") or {}).get("conditions"),
            status.per_user_conditions(meta.get("generation")),
            self.clock(),
        )
        patch: dict[str, Any] = {
            "observedGeneration": meta.get("generation"),
            "conditions": status.wire_conditions(conditions),
            "tenancy": "perUser",
            "instances": count,
        }
        self._status_writer("MCPServer", body, write)(patch)
        return Outcome((), True, patch)

    def count_instances(self, namespace: str, server: str) -> int:
        """MCPServerInstances of `server` (listed, so deletions count at once)."""
        items = self.kube.list(API_VERSION, "MCPServerInstance", namespace, {})
        return sum(
            1
            for i in items
            if (i.get("spec") or {}).get("server") == server
            and not _meta(i).get("deletionTimestamp")
        )

    def update_instance_count(self, namespace: str, server: str) -> None:
        """Write a perUser server's `status.instances`."""
        count = self.count_instances(namespace, server)
        self.kube.patch_status(API_VERSION, "MCPServer", namespace, server, {"instances": count})

    def reconcile_entry(self, body: Body, servers: Iterable[Body]) -> int:
        """Write an entry's status (servers counted); returns the count."""
        meta = _meta(body)
        name = meta["name"]
        count = sum(1 for s in servers if _entry_of(s) == name)
        try:
            MCPCatalogEntrySpec.model_validate(body.get("spec") or {})
            problems: tuple[str, ...] = ()
        except ValidationError as error:
            problems = _validation_problems(error)
        valid = Condition(
            type="ConfigValid",
            status="False" if problems else "True",
            reason="InvalidConfig" if problems else "Valid",
            message="; ".join(problems),
            observed_generation=meta.get("generation"),
        )
        conditions = status.merge_conditions(
            (body.get("status") or {}).get("conditions"), [valid], self.clock()
        )
        patch = {
            "observedGeneration": meta.get("generation"),
            "conditions": status.wire_conditions(conditions),
            "servers": count,
        }
        self.kube.patch_status(API_VERSION, "MCPCatalogEntry", meta["namespace"], name, patch)
        return count

    def count_entry_servers(self, namespace: str, entry: str, servers: Iterable[Body]) -> None:
        """Write `status.servers` of the catalog entry `entry` (when it exists)."""
        count = len(servers_using_entry(servers, entry))
        self.kube.patch_status(API_VERSION, "MCPCatalogEntry", namespace, entry, {"servers": count})

    def reconcile_policy(self, body: Body) -> tuple[str, ...]:
        """Validate a policy and write its ConfigValid condition; returns the problems."""
        meta = _meta(body)
        try:
            problems = tuple(validate_policy(parse_policy(body)))
        except ValidationError as error:
            problems = _validation_problems(error)
        valid = Condition(
            type="ConfigValid",
            status="False" if problems else "True",
            reason="InvalidPolicy" if problems else "Valid",
            message="; ".join(problems) or "every rule compiles",
            observed_generation=meta.get("generation"),
        )
        conditions = status.merge_conditions(
            (body.get("status") or {}).get("conditions"), [valid], self.clock()
        )
        patch = {
            "observedGeneration": meta.get("generation"),
            "conditions": status.wire_conditions(conditions),
        }
        self.kube.patch_status(API_VERSION, "AccessPolicy", meta["namespace"], meta["name"], patch)
        if problems:
            self.events(body, warning=True, reason="InvalidPolicy", message="; ".join(problems))
        return problems


def _parse(conditions: Any) -> list[Condition]:
    return [Condition.model_validate(c) for c in conditions or ()]


def _entry_of(server: Body) -> str | None:
    ref = (server.get("spec") or {}).get("catalogEntry") or {}
    name = ref.get("name")
    return str(name) if name else None


def servers_using_entry(servers: Iterable[Body], entry: str) -> list[Body]:
    """Servers instantiating the catalog entry `entry`."""
    return [s for s in servers if _entry_of(s) == entry]


def servers_targeted(servers: Iterable[Body], policies: Iterable[Body]) -> list[Body]:
    """Servers any of `policies` targets (by name, selector or catalog entry)."""
    parsed = []
    for body in policies:
        try:
            parsed.append(parse_policy(body))
        except ValidationError:
            continue
    chosen = []
    for server in servers:
        probe = _target(_meta(server), _entry_of(server))
        if any(targets(p, probe) for p in parsed):
            chosen.append(server)
    return chosen


def _target(meta: Mapping[str, Any], entry: str | None) -> Target:
    return Target(meta["namespace"], meta["name"], dict(meta.get("labels") or {}), entry)
