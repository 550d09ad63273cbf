"""A GPU pool that scales from zero: with no node of the pool in the cluster (the normal state
of a Karpenter or cluster-autoscaler GPU pool), a model with a known GPU count still gets its
pods, Pending, so that a node autoscaler sees them and adds a node; when one joins, it serves."""

from __future__ import annotations

from tests.integration.models import GROUP, PLURAL, VERSION, Models, models, operator, wait_for
from tests.kube import add_gpu_node, remove_node

__all__ = ["models", "operator"]  # fixtures

POOL = {"pool.example.com/name": "gpu-spot"}  # no node carries it until the test adds one


def test_pods_wait_pending_for_a_pool_with_no_node_then_serve_when_one_joins(
    models: Models,
) -> None:
    models.create("scaled-pool", tensorParallelSize=2, nodeSelector=POOL)
    cond = models.wait_condition("scaled-pool", "Scheduled", "False", timeout=60)
    assert cond["reason"] in ("NoGPUNodes", "Unschedulable"), cond
    deployment = models.apps.read_namespaced_deployment("scaled-pool", models.namespace)
    assert deployment.spec.template.spec.node_selector.items() >= POOL.items()
    limits = deployment.spec.template.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "2"
    (pod,) = wait_for(lambda: models.pods("scaled-pool"), 60, "a Pending pod")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    add_gpu_node("gpu-spot-0", gpus=4, labels=POOL)
    try:
        models.wait_condition("scaled-pool", "Scheduled", "True", timeout=90)
        models.wait_condition("scaled-pool", "Ready", "True", timeout=90)
        (pod,) = models.pods("scaled-pool")
        assert pod.spec.node_name == "gpu-spot-0"
    finally:
        models.custom.delete_namespaced_custom_object(
            GROUP, VERSION, models.namespace, PLURAL, "scaled-pool"
        )
        wait_for(lambda: not models.pods("scaled-pool"), 60, "the pod to go")
        remove_node("gpu-spot-0")
