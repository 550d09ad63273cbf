"""Fixtures of the modules that run the operator beside a real KEDA and Prometheus (built from
the Go module proxy): a work folder, the stack, the operator told its Prometheus address, and the
models it serves. A module that needs another stack defines its own `stack`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.autoscaling_stack import AutoscalingStack
from tests.integration.models import Models, running_operator
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keda")


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
