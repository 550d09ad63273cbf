"""The replicas handoff of test_replicas_handoff with KEDA (operator and metrics apiserver) and
Prometheus, built from the Go module proxy: the ScaledObject's HPA, which has a metric (no series
yet: 0, so its minimum), never takes the Deployment below the floor either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.autoscaling_stack import AutoscalingStack
from tests.integration.models import Models, running_operator
from tests.integration.test_replicas_handoff import replicas_through_autoscaling
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("handoff-keda")


@pytest.fixture(scope="module")
def stack(cluster: ClusterHandle, work: Path) -> Iterator[AutoscalingStack]:
    with AutoscalingStack(cluster.kubeconfig, work / "stack") as running:
        yield running


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, work: Path, stack: AutoscalingStack
) -> Iterator[OperatorProcess]:
    env = {"TRITON_VLLM_PROMETHEUS_ADDRESS": stack.prometheus_url}
    with running_operator(cluster, work / "operator.log", env) as process:
        yield process


@pytest.fixture
def models(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Models:
    return Models(api_client, namespace)


def test_replicas_to_keda_and_back_never_takes_the_deployment_below_the_floor(
    cluster: ClusterHandle, models: Models
) -> None:
    samples = replicas_through_autoscaling(cluster, models, "KEDA", False)
    assert min(samples) >= 3, f"the Deployment went below 3: {samples}"
