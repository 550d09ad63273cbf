"""The operator reacts to events, not to timers: a model turns Ready as soon as its pods do, and a
converged model carries no finalizer and costs no writes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.models import Models, running_operator, wait_for
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator") / "operator.log",
        # An operator that still polled would poll once in ten minutes here.
        {"TRITON_VLLM_RECHECK_SECONDS": "600"},
    ) as process:
        yield process


@pytest.fixture
def models(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Models:
    return Models(api_client, namespace)


def test_ready_follows_the_pods_without_a_timer_and_idle_models_cost_no_writes(
    models: Models,
) -> None:
    models.create("evented", tensorParallelSize=1, replicas=2)
    models.wait_condition("evented", "Ready", "True", timeout=30)
    model = models.get("evented")
    assert not model["metadata"].get("finalizers"), model["metadata"]
    assert model["status"]["readyReplicas"] == 2
    time.sleep(1)  # the last write of the pass
    version = models.get("evented")["metadata"]["resourceVersion"]
    deployment = models.apps.read_namespaced_deployment("evented", models.namespace)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert models.get("evented")["metadata"]["resourceVersion"] == version
        again = models.apps.read_namespaced_deployment("evented", models.namespace)
        assert again.metadata.resource_version == deployment.metadata.resource_version
        time.sleep(0.5)

    # Scaling is an event too: the status follows the Deployment.
    models.patch_spec("evented", replicas=1)
    generation = models.get("evented")["metadata"]["generation"]
    wait_for(
        lambda: (
            models.condition("evented", "Ready").get("observedGeneration") == generation
            and models.get("evented")["status"]["readyReplicas"] == 1
        ),
        30,
        "the status to follow the scale-down",
    )
