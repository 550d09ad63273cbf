"""Fixtures for the reliability tests: the integration fixtures (a real control plane, a fresh
namespace), plus an operator process that watches only that namespace and a scale knob.

RELIABILITY_LONG=1 runs the long variants (`make chaos`): 200 models under SIGKILLs, 500 hostile
specs. Without it, the CI variants run (40 models and 3 kills, 120 hostile specs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.conftest import api_client, cluster, kubeconfig, namespace
from tests.kube import ClusterHandle
from tests.operator_process import CRD, OperatorProcess
from tests.reliability.helpers import GROUP, PLURAL, VERSION, wait_for

__all__ = ["api_client", "cluster", "kubeconfig", "namespace"]

HERE = Path(__file__).resolve().parent
LONG = os.environ.get("RELIABILITY_LONG") == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def crd(cluster: ClusterHandle) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tritonvllmmodels.tritonvllm.io")


@pytest.fixture
def operator(
    crd: None,
    kubeconfig: Path,
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OperatorProcess]:
    """An operator watching only `namespace` (other sessions' operators and models stay out of
    the measurements); not started. On teardown: started if down, the namespace's models deleted
    while it runs, then stopped."""
    monkeypatch.setenv("TRITON_VLLM_NAMESPACES", namespace)
    process = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    yield process
    custom = client.CustomObjectsApi(api_client)
    try:
        if not process.alive:
            process.start()
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        wait_for(
            lambda: (
                not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            ),
            180,
            "the models to be deleted",
        )
    finally:
        process.stop()
