"""Fixtures for tests against the real local control plane (hack/cluster.sh).

cluster      (session)  ClusterHandle: started, or reused when one already answers. At the end
                        it is stopped if test sessions started it and no other session still
                        uses it (KEEP_CLUSTER=1 keeps it; one from `make cluster-up` stays).
kubeconfig   (session)  Path of the admin kubeconfig.
api_client   (session)  kubernetes.client.ApiClient for it.
namespace    (function) name of a fresh namespace (default ServiceAccount ready), deleted
                        after the test.
gateway      (module)   SeriesServer: a metrics endpoint whose series a test sets (the stand-in
                        for an inference gateway's series in the autoscaling tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.autoscaling_stack import SeriesServer
from tests.kube import ClusterHandle, ensure_cluster, wait_until

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything here needs the control plane: `-m "not cluster"` skips the lot.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    handle = ensure_cluster()
    yield handle
    handle.release(keep=os.environ.get("KEEP_CLUSTER") == "1")


@pytest.fixture(scope="session")
def kubeconfig(cluster: ClusterHandle) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(cluster: ClusterHandle) -> Iterator[Any]:
    api = cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    # Unique per test so deletion need not be awaited; names stay DNS-1123 labels.
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"tritonvllm.io/test": "true"})
        )
    )
    # The ServiceAccount admission refuses pods until kcm has made the default ServiceAccount.
    wait_until(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def gateway() -> Iterator[SeriesServer]:
    series = SeriesServer()
    yield series
    series.close()
