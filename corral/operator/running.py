"""Starting the operator: the API client, the reconciler, kopf with our registry, and /metrics.

Rule: the only place that wires parts together; kopf is started programmatically
(`kopf.operator(...)`) with the registry built for these settings, never from a file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from aiohttp import web
from kubernetes import client, config

from corral.operator.handlers import build_registry
from corral.operator.kube import APPLY_THREADS, Kube
from corral.operator.metrics import Metrics, metrics_app
from corral.operator.reconciler import Body, Reconciler
from corral.operator.settings import OperatorSettings

PREFIX = "kopf.corral.dev"
HANDLER_THREADS = 16
POOL_SIZE = HANDLER_THREADS + APPLY_THREADS


def api_client() -> client.ApiClient:
    """A client from the in-cluster service account, else from KUBECONFIG / ~/.kube/config, with
    a connection pool as large as kopf's handler threads and the apply threads together (no TLS
    handshake per request)."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


def post_event(body: Body, *, warning: bool, reason: str, message: str) -> None:
    """A Kubernetes Event about `body`, posted through kopf's queue."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, dict(body))),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:1000],
    )


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's settings: progress in annotations under corral.dev, few automatic Events."""
    result = kopf.OperatorSettings()
    result.persistence.finalizer = "corral.dev/operator"
    result.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    result.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    result.posting.level = logging.WARNING
    result.peering.name = settings.peering.name
    result.peering.priority = settings.peering.priority
    result.peering.standalone = settings.peering.standalone
    result.peering.clusterwide = settings.watch.clusterwide
    result.watching.server_timeout = 300
    result.execution.max_workers = HANDLER_THREADS
    return result


async def _serve_metrics(metrics: Metrics, settings: OperatorSettings) -> web.AppRunner | None:
    port = settings.serve.metrics_port
    if port is None:
        return None
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.serve.metrics_host, port).start()
    return runner


async def run(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until `stop_flag` is set or the process is signalled."""
    metrics = Metrics()
    with api_client() as api:
        kube = Kube(api)
        reconciler = Reconciler(
            settings=settings,
            kube=kube,
            clock=lambda: datetime.now(UTC),
            events=post_event,
        )
        registry = build_registry(reconciler, metrics, settings.watch.idle_check_seconds)
        runner = await _serve_metrics(metrics, settings)
        options: dict[str, Any] = (
            {"clusterwide": True}
            if settings.watch.clusterwide
            else {"namespaces": list(settings.watch.namespaces)}
        )
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(settings),
                peering_name=None if settings.peering.standalone else settings.peering.name,
                standalone=settings.peering.standalone,
                priority=settings.peering.priority,
                liveness_endpoint=settings.serve.liveness_endpoint,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                **options,
            )
        finally:
            if runner is not None:
                await runner.cleanup()
            kube.close()
