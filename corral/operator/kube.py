"""The one adapter to the Kubernetes API: server-side apply of built objects, reads, status
patches and deletes.

Rule: only this module talks to the API server (besides kopf's own watching). Every write of a
built object is a server-side apply with field manager `corral-operator`, so re-applying the same
object is a no-op and a restart never duplicates anything. Errors surface as `KubeError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "corral-operator"
APPLY_THREADS = 16
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Deployment": "deployments",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "MCPServer": "mcpservers",
    "MCPServerInstance": "mcpserverinstances",
    "MCPCatalogEntry": "mcpcatalogentries",
    "AccessPolicy": "accesspolicies",
}


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


@dataclass
class Kube:
    """Calls to one API server through a `kubernetes` ApiClient (thread-safe, blocking). The
    objects of one workload are applied at once from a bounded pool of threads; `close` stops
    it."""

    api: client.ApiClient
    applier: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="apply")
    )

    def close(self) -> None:
        """Stop the apply threads (after the calls in flight)."""
        self.applier.shutdown(wait=True)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*params)
            response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise KubeError(f"{method} {path}: {exc.status} {exc.reason}", exc.status) from None
        if response.status >= 400:
            detail = _message(response.data)
            raise KubeError(f"{method} {path}: {response.status} {detail}", response.status)
        return json.loads(response.data) if response.data else {}

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` (it carries apiVersion, kind, metadata.namespace and name)."""
        meta = obj["metadata"]
        path = _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        return self._call(
            "PATCH",
            path,
            body=dict(obj),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def apply_all(self, objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Server-side apply every object concurrently (none waits on another: pods wait for
        a missing ConfigMap), the results in order; the first failure is raised once all ended."""
        futures = [self.applier.submit(self.apply, obj) for obj in objects]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def get(
        self, api_version: str, kind: str, namespace: str, name: str, *, cached: bool = False
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist. `cached`: from the API server's watch
        cache (which may lag a moment behind etcd) instead of a quorum read."""
        query = [("resourceVersion", "0")] if cached else None
        try:
            return self._call("GET", _path(api_version, kind, namespace, name), query=query)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` whose labels match `selector`."""
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items()))]
        result = self._call("GET", _path(api_version, kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (dependents in the background); False when it was already gone."""
        body = {"propagationPolicy": "Background"}
        try:
            self._call("DELETE", _path(api_version, kind, namespace, name), body=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge `status` into the object's status subresource (ignored when the object is gone)."""
        path = _path(api_version, kind, namespace, name) + "/status"
        try:
            self._call(
                "PATCH",
                path,
                body={"status": dict(status)},
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", ""))
    except ValueError:
        return (data or b"")[:200].decode(errors="replace")
