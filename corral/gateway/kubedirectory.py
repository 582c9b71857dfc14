"""Server discovery from Kubernetes: a read-only watch cache of MCPServers and AccessPolicies.

Rule: the request path reads only the in-memory snapshot; watching happens on background
threads with the official ``kubernetes`` client (list, then watch from the list's
resourceVersion; on any error or expiry, list again after ``retry_delay``). Each update swaps
in a new immutable snapshot, so readers on the event loop never see a half-built one. A server
is routable once the operator has published its shim in ``status.endpoint``. The gateway's
RBAC for this: get, list and watch on ``mcpservers`` and ``accesspolicies``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from corral.api.common import parse_duration
from corral.api.policies import AccessPolicy
from corral.api.policy import Caller, Decision, PolicyIndex
from corral.gateway.directory import ServerEntry, StaticDirectory

log = logging.getLogger(__name__)

GROUP, VERSION = "corral.dev", "v1alpha1"
DEFAULT_STARTUP_TIMEOUT = 60.0
Key = tuple[str, str]


def server_entry(manifest: Mapping[str, Any]) -> ServerEntry | None:
    """The routable entry of an MCPServer object, or None before its shim endpoint is known."""
    metadata, spec = manifest.get("metadata") or {}, manifest.get("spec") or {}
    status = manifest.get("status") or {}
    endpoint = status.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    tenancy = status.get("tenancy") or spec.get("tenancy") or "shared"
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
    """A ``ServerDirectory`` over a watch of MCPServers and AccessPolicies.

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
            )
        ]

    def start(self) -> None:
        for watcher in self._watchers:
            watcher.start()

    def wait_synced(self, timeout: float) -> bool:
        """Whether both kinds were listed within ``timeout`` seconds (blocking: use a thread)."""
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

    def lookup(self, namespace: str, name: str) -> ServerEntry | None:
        return self._snapshot.lookup(namespace, name)

    def may_access(self, caller: Caller, server: ServerEntry) -> Decision | None:
        return self._snapshot.may_access(caller, server)

    def owns_instance(self, server: ServerEntry, instance: str) -> bool:
        return self._snapshot.owns_instance(server, instance)
