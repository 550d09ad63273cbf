"""Pods the API server refuses at admission (here a ResourceQuota): the model says so in
Scheduled=False with the API server's own message, not Scheduled=True while nothing runs.
"""

from __future__ import annotations

from kubernetes import client

from tests.integration.models import Models, models, operator

__all__ = ["models", "operator"]  # fixtures


def test_a_quota_of_zero_gpus_is_named_in_scheduled_false(models: Models) -> None:
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-gpus"),
        spec=client.V1ResourceQuotaSpec(hard={"requests.nvidia.com/gpu": "0"}),
    )
    models.core.create_namespaced_resource_quota(models.namespace, quota)
    models.create("quota", tensorParallelSize=1)
    scheduled = models.wait_condition("quota", "Scheduled", "False", "FailedCreate", timeout=10)
    assert "exceeded quota: no-gpus" in scheduled["message"]
    assert "requests.nvidia.com/gpu" in scheduled["message"]
    assert models.condition("quota", "Ready")["status"] == "False"
