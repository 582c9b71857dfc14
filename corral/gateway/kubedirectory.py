"""Server discovery from Kubernetes: a watch cache of MCPServers, MCPServerInstances,
AccessPolicies and MCPCatalogEntries, and the perUser instance manager built on it.

Rule: the request path reads only the in-memory snapshot; watching happens on background
threads with the official ``kubernetes`` client (list, then watch from the list's
resourceVersion; on any error or expiry, list again after ``retry_delay``). Each update swaps
in a new immutable snapshot, so readers on the event loop never see a half-built one. A server
is routable once the operator has published its shim in ``status.endpoint``. A shared server
the operator scaled to zero (``Ready=False`` reason ``ScaledToZero``) is woken by the annotation
``corral.dev/wake-requested`` (a merge patch of its metadata; the spec is never edited) and the
call waits for Ready. The gateway's RBAC for this: get, list and watch on ``mcpservers``,
``mcpserverinstances``, ``accesspolicies`` and ``mcpcatalogentries`` (the registry listings);
create on ``mcpserverinstances`` and patch on ``mcpservers`` (``KubernetesInstances`` only);
patch on ``mcpservers/status`` and ``mcpserverinstances/status`` (activity, see
``corral.gateway.activity``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from corral.api.catalog import MCPCatalogEntry
from corral.api.common import parse_duration
from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, Decision, PolicyIndex
from corral.gateway.activity import API_ERRORS, REQUEST_TIMEOUT, StatusWriter, Target
from corral.gateway.authn import Principal
from corral.gateway.directory import (
    UNKNOWN_STATUS,
    ServerEntry,
    ServerStatus,
    StaticDirectory,
    catalog_key,
)
from corral.gateway.instances import InstanceStarting

log = logging.getLogger(__name__)

GROUP, VERSION = "corral.dev", "v1alpha1"
DEFAULT_STARTUP_TIMEOUT = 60.0
INSTANCE_PREFIX_MAX = 37
"""Instance names stay within the 50 characters a server name may have."""
SERVER_LABEL = "corral.dev/server"
READY_POLL_INTERVAL = 0.1
CREATE_RETRY_AFTER = 5
WAKE_ANNOTATION = f"{GROUP}/wake-requested"
WAKE_REPEAT = 5.0
"""One replica asks again to wake a server at most this often (seconds)."""
Key = tuple[str, str]


def server_entry(manifest: Mapping[str, Any]) -> ServerEntry | None:
    """The routable entry of an MCPServer object, or None for a shared server whose shim
    endpoint is not known yet (perUser servers route to their instances' endpoints)."""
    status = manifest.get("status") or {}
    endpoint = status.get("endpoint")
    tenancy = status.get("tenancy") or (manifest.get("spec") or {}).get("tenancy") or "shared"
    if not isinstance(endpoint, str) or not endpoint:
        if tenancy != "perUser":
            return None
        endpoint = ""
    return _entry(manifest, endpoint)


def listed_entry(manifest: Mapping[str, Any]) -> ServerEntry:
    """The entry of any MCPServer, routable or not yet (then its ``shim_url`` is empty)."""
    return server_entry(manifest) or _entry(manifest, "")


def _entry(manifest: Mapping[str, Any], endpoint: str) -> ServerEntry:
    metadata, spec = manifest.get("metadata") or {}, manifest.get("spec") or {}
    tenancy = (manifest.get("status") or {}).get("tenancy") or spec.get("tenancy") or "shared"
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


def server_status(manifest: Mapping[str, Any]) -> ServerStatus:
    """The listing status of an MCPServer object: its Ready condition and the tools recorded."""
    status = manifest.get("status") or {}
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or () if c.get("type") == "Ready"), {}
    )
    names = status.get("tools")
    tools = tuple(str(n) for n in names) if isinstance(names, list) else None
    count = status.get("toolCount")
    if not isinstance(count, int):
        count = None if tools is None else len(tools)
    return ServerStatus(
        ready=None if not ready else ready.get("status") == "True",
        reason=ready.get("reason"),
        message=ready.get("message"),
        tool_count=count,
        tools=tools,
    )


@dataclass(frozen=True)
class ServerState:
    """Whether a shared server can take calls, is asleep, or is starting (no replica yet)."""

    ready: bool
    asleep: bool
    starting: bool


def server_state(manifest: Mapping[str, Any]) -> ServerState:
    status = manifest.get("status") or {}
    ready_condition: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or () if c.get("type") == "Ready"), {}
    )
    replicas = status.get("readyReplicas") or 0
    reason = ready_condition.get("reason")
    asleep = reason == "ScaledToZero"
    return ServerState(
        # scaled to zero wins over a readyReplicas that still counts pods on their way out
        ready=not asleep and (ready_condition.get("status") == "True" or replicas >= 1),
        asleep=asleep,
        starting=reason == "Starting" and replicas == 0,
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


WATCH_ERRORS: tuple[type[Exception], ...] = (*API_ERRORS, ValueError)
"""A failed call, or a watch that ended in an ERROR event: list and watch again."""
LIST_TIMEOUT = (5.0, 60.0)
"""Seconds to connect and to read a list's answer."""
WATCH_GRACE = 5.0
"""How long past its ``timeout_seconds`` a watch may stay silent before the watcher gives it
up: the API server ends every watch at that time, so a longer silence means a connection
that died without a word (an idle TCP drop on the way), which would otherwise hang for good."""


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
            except WATCH_ERRORS as error:
                log.warning("watch of %s failed, listing again: %s", self._plural, error)
            except Exception:
                log.exception("watch of %s failed unexpectedly, listing again", self._plural)
            self._stopping.wait(self._retry_delay)

    def _list(self, **options: Any) -> Any:
        options["_request_timeout"] = LIST_TIMEOUT
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
        options: dict[str, Any] = {
            "timeout_seconds": self._watch_timeout,
            "_request_timeout": (LIST_TIMEOUT[0], self._watch_timeout + WATCH_GRACE),
        }
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
        self._states: dict[Key, ServerState] = {}
        self._listed: tuple[ServerEntry, ...] = ()
        self._statuses: dict[Key, ServerStatus] = {}
        self._catalog: tuple[MCPCatalogEntry, ...] = ()
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
                ("mcpcatalogentries", self._catalog_changed),
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
        self._states = {key: server_state(manifest) for key, manifest in objects.items()}
        self._statuses = {key: server_status(manifest) for key, manifest in objects.items()}
        self._listed = tuple(listed_entry(objects[key]) for key in sorted(objects))
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

    def _catalog_changed(self, objects: dict[Key, Mapping[str, Any]]) -> None:
        entries = []
        for key, manifest in objects.items():
            try:
                entries.append(MCPCatalogEntry.model_validate(manifest))
            except ValidationError as error:
                log.warning("MCPCatalogEntry %s/%s not listed: %s", *key, error)
        self._catalog = tuple(sorted(entries, key=catalog_key))

    def state(self, namespace: str, name: str) -> ServerState | None:
        return self._states.get((namespace, name))

    def instance(self, namespace: str, name: str) -> InstanceEntry | None:
        return self._instances.get((namespace, name))

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._snapshot.lookup(namespace, name)

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        return self._snapshot.may_access(caller, server)

    def servers(self) -> Sequence[ServerEntry]:
        """Every MCPServer watched, routable or not yet (their status says why)."""
        return self._listed

    def status(self, server: ServerEntry) -> ServerStatus:
        return self._statuses.get((server.namespace, server.name), UNKNOWN_STATUS)

    def catalog(self) -> Sequence[MCPCatalogEntry]:
        return self._catalog

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        """A shared server scaled to zero (or starting with no replica) has no instance: its
        sessions ended with its pods, so the client is told to initialize again (404)."""
        if server.tenancy == "shared":
            state = self._states.get((server.namespace, server.name))
            if state is not None and (state.asleep or state.starting):
                return False
            return self._snapshot.owns_instance(server, instance)
        return any(
            entry.endpoint == instance
            for entry in self._instances.values()
            if (entry.namespace, entry.server) == (server.namespace, server.name)
        )


class KubernetesInstances:
    """An ``InstanceManager`` for Kubernetes: shared servers are their Service, woken first when
    scaled to zero; a perUser server gets one MCPServerInstance per user, created on the user's
    first call (the operator runs it). Either way the call waits until the watch sees it Ready.
    The router bounds the wait by the server's ``startupTimeout`` (then 503 with
    ``Retry-After``). Calls are recorded by a ``StatusWriter`` as ``lastActivity`` of the
    MCPServer (shared) or the caller's MCPServerInstance (perUser); listed tools always go to
    the MCPServer (instances have no tools field). Call ``aclose`` on shutdown."""

    def __init__(
        self,
        api: client.ApiClient,
        directory: KubernetesDirectory,
        *,
        activity_interval: float | None = None,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._directory = directory
        self._woken: dict[Key, float] = {}
        self.activity = (
            StatusWriter(api)
            if activity_interval is None
            else StatusWriter(api, interval=activity_interval)
        )

    async def aclose(self) -> None:
        await self.activity.aclose()

    def record(
        self, server: ServerEntry, principal: Principal, tools: Sequence[str] | None = None
    ) -> None:
        parent = Target("mcpservers", server.namespace, server.name)
        if server.tenancy == "shared":
            self.activity.note(parent, tools)
            return
        name = instance_name(server.name, principal.user)
        self.activity.note(Target("mcpserverinstances", server.namespace, name))
        if tools is not None:
            self.activity.note(parent, tools)

    def running(self, server: ServerEntry, principal: Principal) -> str | None:
        if server.tenancy == "shared":
            state = self._directory.state(server.namespace, server.name)
            if state is None or state.ready or not (state.asleep or state.starting):
                return server.shim_url
            return None
        entry = self._directory.instance(
            server.namespace, instance_name(server.name, principal.user)
        )
        if entry is None or not entry.ready:
            return None
        return entry.endpoint

    async def ensure_running(self, server: ServerEntry, principal: Principal) -> str:
        if server.tenancy == "shared":
            return await self._shared(server)
        name = instance_name(server.name, principal.user)
        entry = self._directory.instance(server.namespace, name)
        if entry is None:
            try:
                await asyncio.to_thread(self._create, server, name, principal)
            except API_ERRORS as error:
                log.warning(
                    "cannot create MCPServerInstance %s/%s: %s", server.namespace, name, error
                )
                raise InstanceStarting(server, retry_after=CREATE_RETRY_AFTER) from None
        while entry is None or not entry.ready or entry.endpoint is None:
            await asyncio.sleep(READY_POLL_INTERVAL)
            entry = self._directory.instance(server.namespace, name)
        return entry.endpoint

    async def _shared(self, server: ServerEntry) -> str:
        key = (server.namespace, server.name)
        state = self._directory.state(*key)
        if state is None or state.ready or not (state.asleep or state.starting):
            return server.shim_url
        started = time.monotonic()
        while state is not None and not state.ready:
            if state.asleep:
                await self._wake(server)
            await asyncio.sleep(READY_POLL_INTERVAL)
            state = self._directory.state(*key)
        log.info("%s ready after %.1fs", server.route, time.monotonic() - started)
        current = self._directory.lookup(*key)
        return server.shim_url if current is None else current.shim_url

    async def _wake(self, server: ServerEntry) -> None:
        key = (server.namespace, server.name)
        now = time.monotonic()
        if now - self._woken.get(key, -WAKE_REPEAT) < WAKE_REPEAT:
            return
        self._woken[key] = now
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"metadata": {"annotations": {WAKE_ANNOTATION: stamp}}}
        try:
            await asyncio.to_thread(
                self._custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                server.namespace,
                "mcpservers",
                server.name,
                patch,
                _request_timeout=REQUEST_TIMEOUT,
            )
            log.info("asked to wake %s", server.route)
        except API_ERRORS as error:
            log.warning("cannot wake %s: %s", server.route, error)
            raise InstanceStarting(server, retry_after=CREATE_RETRY_AFTER) from None

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
                GROUP,
                VERSION,
                server.namespace,
                "mcpserverinstances",
                body,
                _request_timeout=REQUEST_TIMEOUT,
            )
            log.info("created MCPServerInstance %s/%s", server.namespace, name)
        except ApiException as error:
            if error.status != 409:
                raise
