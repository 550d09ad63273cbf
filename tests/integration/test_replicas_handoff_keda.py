"""The replicas handoff of test_replicas_handoff with KEDA (operator and metrics apiserver) and
Prometheus, built from the Go module proxy: the ScaledObject's HPA, which has a metric (no series
yet: 0, so its minimum), never takes the Deployment below the floor either.
"""

from __future__ import annotations

from tests.integration.keda_operator import models, operator, stack, work
from tests.integration.models import Models
from tests.integration.test_replicas_handoff import replicas_through_autoscaling
from tests.kube import ClusterHandle

__all__ = ["models", "operator", "stack", "work"]  # fixtures


def test_replicas_to_keda_and_back_never_takes_the_deployment_below_the_floor(
    cluster: ClusterHandle, models: Models
) -> None:
    samples = replicas_through_autoscaling(cluster, models, "KEDA", False)
    assert min(samples) >= 3, f"the Deployment went below 3: {samples}"
