"""Server discovery from Kubernetes: a watch cache of MCPServers, MCPServerInstances and
AccessPolicies, and the perUser instance manager built on it.

Rule: the request path reads only the in-memory snapshot; watching happens on background
threads with the official ``kubernetes`` client (list, then watch from the list's
resourceVersion; on any error or expiry, list again after ``retry_delay``). Each update swaps
in a new immutable snapshot, so readers on the event loop never see a half-built one. A server
is routable once the operator has published its shim in ``status.endpoint``. The gateway's
RBAC for this: get, list and watch on ``mcpservers``, ``mcpserverinstances`` and
``accesspolicies``, and create on ``mcpserverinstances`` (``KubernetesInstances`` only).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from corral.api.common import parse_duration
from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, Decision, PolicyIndex
from corral.gateway.authn import Principal
from corral.gateway.directory import ServerEntry, StaticDirectory
from corral.gateway.instances import InstanceStarting

log = logging.getLogger(__name__)

GROUP, VERSION = "corral.dev", "v1alpha1"
DEFAULT_STARTUP_TIMEOUT = 60.0
INSTANCE_PREFIX_MAX = 37
"""Instance names stay within the 50 characters a server name may have."""
SERVER_LABEL = "corral.dev/server"
READY_POLL_INTERVAL = 0.1
CREATE_RETRY_AFTER = 5
Key = tuple[str, str]


def server_entry(manifest: Mapping[str, Any]) -> ServerEntry | None:
    """The routable entry of an MCPServer object, or None for a shared server whose shim
    endpoint is not known yet (perUser servers route to their instances' endpoints)."""
    metadata, spec = manifest.get("metadata") or {}, manifest.get("spec") or {}
    status = manifest.get("status") or {}
    endpoint = status.get("endpoint")
    tenancy = status.get("tenancy") or spec.get("tenancy") or "shared"
    if not isinstance(endpoint, str) or not endpoint:
        if tenancy != "perUser":
            return None
        endpoint = ""
    catalog = spec.get("catalogEntry") or {}
    try:
        startup = float(parse_duration(spec.get("startupTimeout", DEFAULT_STARTUP_TIMEOUT)))
    except (ValueError, TypeError):
        startup = DEFAULT_STARTUP_TIMEOUT
    return ServerEntry(
        namespace=metadata.get("namespace", "default"),
        name=metadata["name"],
        shim_url=endpoint,
        tenancy="perUser" if tenancy == "perUser" else "shared",
        labels=dict(metadata.get("labels") or {}),
        catalog_entry=catalog.get("name"),
        startup_timeout=startup or DEFAULT_STARTUP_TIMEOUT,
    )


@dataclass(frozen=True)
class InstanceEntry:
    """One perUser instance as the watch last saw it."""

    namespace: str
    name: str
    server: str
    owner: str
    endpoint: str | None
    ready: bool


def instance_entry(manifest: Mapping[str, Any]) -> InstanceEntry:
    metadata, spec = manifest.get("metadata") or {}, manifest.get("spec") or {}
    status = manifest.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    endpoint = status.get("endpoint")
    return InstanceEntry(
        namespace=metadata.get("namespace", "default"),
        name=metadata.get("name", ""),
        server=spec.get("server", ""),
        owner=(spec.get("owner") or {}).get("username", ""),
        endpoint=endpoint if isinstance(endpoint, str) and endpoint else None,
        ready=ready or (status.get("readyReplicas") or 0) >= 1,
    )


def instance_name(server: str, username: str) -> str:
    """The deterministic MCPServerInstance name for one user of ``server`` (any replica that
    handles the user's first call picks the same name, so creation races end in one object)."""
    digest = hashlib.sha256(f"{server}\0{username}".encode()).hexdigest()[:12]
    return f"{server[:INSTANCE_PREFIX_MAX]}-{digest}"


def _key(manifest: Mapping[str, Any]) -> Key:
    metadata = manifest.get("metadata") or {}
    return metadata.get("namespace", "default"), metadata.get("name", "")


class _Watcher(threading.Thread):
    """Keeps ``objects`` equal to the cluster's objects of one plural, calling ``changed``."""

    def __init__(
        self,
        api: client.ApiClient,
        plural: str,
        changed: Callable[[dict[Key, Mapping[str, Any]]], None],
        *,
        namespace: str | None,
        retry_delay: float,
        watch_timeout: int,
    ) -> None:
        super().__init__(name=f"corral-watch-{plural}", daemon=True)
        self._custom = client.CustomObjectsApi(api)
        self._plural = plural
        self._changed = changed
        self._namespace = namespace
        self._retry_delay = retry_delay
        self._watch_timeout = watch_timeout
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list_and_watch()
            except (ApiException, OSError, ValueError) as error:
                log.warning("watch of %s failed, listing again: %s", self._plural, error)
            except Exception:
                log.exception("watch of %s failed unexpectedly, listing again", self._plural)
            self._stopping.wait(self._retry_delay)

    def _list(self, **options: Any) -> Any:
        if self._namespace is None:
            return self._custom.list_cluster_custom_object(GROUP, VERSION, self._plural, **options)
        return self._custom.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, self._plural, **options
        )

    def _list_and_watch(self) -> None:
        listed = self._list()
        objects = {_key(item): item for item in listed.get("items", [])}
        self._changed(dict(objects))
        self.synced.set()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        version = listed.get("metadata", {}).get("resourceVersion")
        for event in self._events(version):
            kind, item = event["type"], event["object"]
            if kind == "ERROR":
                raise ValueError(f"watch error: {item}")
            if kind == "DELETED":
                objects.pop(_key(item), None)
            elif kind in ("ADDED", "MODIFIED"):
                objects[_key(item)] = item
            else:
                continue
            self._changed(dict(objects))

    def _events(self, version: str | None) -> Iterator[dict[str, Any]]:
        assert self._watch is not None
        options: dict[str, Any] = {"timeout_seconds": self._watch_timeout}
        if version:
            options["resource_version"] = version
        if self._namespace is None:
            yield from self._watch.stream(  # type: ignore[no-untyped-call]
                self._custom.list_cluster_custom_object, GROUP, VERSION, self._plural, **options
            )
        else:
            yield from self._watch.stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                self._plural,
                **options,
            )


class KubernetesDirectory:
    """A ``ServerDirectory`` over a watch of MCPServers, their instances and AccessPolicies.

    ``start()`` begins watching (call ``wait_synced`` before serving); ``stop()`` ends it. With
    ``namespace`` it watches one namespace, otherwise the whole cluster.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str | None = None,
        retry_delay: float = 2.0,
        watch_timeout: int = 300,
    ) -> None:
        self._snapshot = StaticDirectory((), PolicyIndex.build(()))
        self._servers: dict[Key, ServerEntry] = {}
        self._policies = PolicyIndex.build(())
        self._instances: dict[Key, InstanceEntry] = {}
        self._watchers = [
            _Watcher(
                api,
                plural,
                changed,
                namespace=namespace,
                retry_delay=retry_delay,
                watch_timeout=watch_timeout,
            )
            for plural, changed in (
                ("mcpservers", self._servers_changed),
                ("accesspolicies", self._policies_changed),
                ("mcpserverinstances", self._instances_changed),
            )
        ]

    def start(self) -> None:
        for watcher in self._watchers:
            watcher.start()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every kind was listed within ``timeout`` seconds (blocking: use a thread)."""
        return all(watcher.synced.wait(timeout) for watcher in self._watchers)

    def stop(self, timeout: float = 5.0) -> None:
        for watcher in self._watchers:
            watcher.stop()
        for watcher in self._watchers:
            watcher.join(timeout)

    def _servers_changed(self, objects: dict[Key, Mapping[str, Any]]) -> None:
        entries = (server_entry(manifest) for manifest in objects.values())
        self._servers = {(e.namespace, e.name): e for e in entries if e is not None}
        self._snapshot = StaticDirectory(self._servers.values(), self._policies)

    def _policies_changed(self, objects: dict[Key, Mapping[str, Any]]) -> None:
        policies = []
        for key, manifest in objects.items():
            try:
                policies.append(AccessPolicy.model_validate(manifest))
            except ValidationError as error:
                log.warning("AccessPolicy %s/%s ignored: %s", *key, error)
        self._policies = PolicyIndex.build(policies)
        self._snapshot = StaticDirectory(self._servers.values(), self._policies)

    def _instances_changed(self, objects: dict[Key, Mapping[str, Any]]) -> None:
        self._instances = {key: instance_entry(manifest) for key, manifest in objects.items()}

    def instance(self, namespace: str, name: str) -> InstanceEntry | None:
        return self._instances.get((namespace, name))

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._snapshot.lookup(namespace, name)

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        return self._snapshot.may_access(caller, server)

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        if server.tenancy == "shared":
            return self._snapshot.owns_instance(server, instance)
        return any(
            entry.endpoint == instance
            for entry in self._instances.values()
            if (entry.namespace, entry.server) == (server.namespace, server.name)
        )


class KubernetesInstances:
    """An ``InstanceManager`` for Kubernetes: shared servers are their Service; a perUser server
    gets one MCPServerInstance per user, created on the user's first call (the operator runs
    it), and the call waits until the watch sees it Ready with an endpoint. The router bounds
    the wait by the server's ``startupTimeout`` (then 503 with ``Retry-After``)."""

    def __init__(self, api: client.ApiClient, directory: KubernetesDirectory) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._directory = directory

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str:
        if server.tenancy == "shared":
            return server.shim_url
        name = instance_name(server.name, principal.user)
        entry = self._directory.instance(server.namespace, name)
        if entry is None:
            try:
                await asyncio.to_thread(self._create, server, name, principal)
            except (ApiException, OSError) as error:
                log.warning(
                    "cannot create MCPServerInstance %s/%s: %s", server.namespace, name, error
                )
                raise InstanceStarting(server, retry_after=CREATE_RETRY_AFTER) from None
        while entry is None or not entry.ready or entry.endpoint is None:
            await asyncio.sleep(READY_POLL_INTERVAL)
            entry = self._directory.instance(server.namespace, name)
        return entry.endpoint

    def _create(self, server: ServerEntry, name: str, principal: Principal) -> None:
        owner = {"username": principal.user}
        if principal.email:
            owner["email"] = principal.email
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MCPServerInstance",
            "metadata": {"name": name, "labels": {SERVER_LABEL: server.name}},
            "spec": {"server": server.name, "owner": owner},
        }
        try:
            self._custom.create_namespaced_custom_object(
                GROUP, VERSION, server.namespace, "mcpserverinstances", body
            )
            log.info("created MCPServerInstance %s/%s", server.namespace, name)
        except ApiException as error:
            if error.status != 409:
                raise
