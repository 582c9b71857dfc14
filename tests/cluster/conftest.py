"""Fixtures for the control-plane tests: a fresh namespace per test on the session's cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.launcher import Cluster


@pytest.fixture
def namespace(k8s_cluster: Cluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with k8s_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        yield name
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise
