"""Autoscaling a model bigger than a node: a real KEDA (operator and metrics apiserver) and
Prometheus, built from the Go module proxy, scale the model itself through its scale
subresource, and the operator makes and removes whole groups of nodes on kwok GPU nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.keda_operator import models, operator, stack, work
from tests.integration.models import Models, wait_for
from tests.kube import ClusterHandle, add_gpu_node, remove_node

__all__ = ["models", "operator", "stack", "work"]  # fixtures

# Nodes of their own (a product no other test asks for): three groups of two 8-GPU nodes.
PRODUCT = "NVIDIA-H800"
NODES = [f"h800-{i}" for i in range(6)]


@pytest.fixture(scope="module")
def nodes(cluster: ClusterHandle) -> Iterator[list[str]]:
    for node in NODES:
        add_gpu_node(node, 8, PRODUCT, 81559)
    yield NODES
    for node in NODES:
        remove_node(node)


def groups(models: Models, name: str) -> list[str]:
    items = models.apps.list_namespaced_stateful_set(
        models.namespace, label_selector=f"app.kubernetes.io/instance={name}"
    ).items
    return sorted(s.metadata.name for s in items)


# One to three groups, read every second, scaled in at once.
SCALING = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "target": 2,
    "pollingSeconds": 1,
    "scaleDownStabilizationSeconds": 0,
}


def test_keda_scales_groups_of_nodes_out_and_in(models: Models, nodes: list[str]) -> None:
    # The query stands for the engine's queue: 5 waiting at a target of 2 a group is 3 groups.
    models.create(
        "big",
        model="meta-llama/Llama-3.1-405B-Instruct",
        modelSizeGiB=760,
        tensorParallelSize=8,
        nodesPerReplica=2,
        gpu={"product": PRODUCT},
        autoscaling={**SCALING, "query": "vector(5)"},
    )
    autoscaling = models.wait_condition("big", "Autoscaling", "True", "KEDA", timeout=60)
    assert "groups of 2 nodes, through the model's scale subresource" in autoscaling["message"]
    # KEDA's HPA writes the model's spec.replicas; the operator makes a group for each.
    wait_for(lambda: models.get("big")["spec"].get("replicas") == 3, 120, "KEDA's 3 groups")
    wait_for(lambda: groups(models, "big") == ["big-g0", "big-g1", "big-g2"], 60, "3 groups")

    def whole(count: int) -> bool:
        status = models.get("big").get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status.get("readyReplicas") == count and ready.get("status") == "True"

    wait_for(lambda: whole(3), 120, "3 whole groups Ready")
    status = models.get("big")["status"]
    assert status["autoscaler"] == "ScaledObject/big" and status["currentReplicas"] == 3
    # Each group's two ranks on two nodes of their own: six nodes in all.
    assert len({r["node"] for r in status["ranks"]}) == 6
    # The load goes: KEDA scales in to its minimum and the operator removes whole groups.
    models.patch_spec("big", autoscaling={**SCALING, "query": "vector(0)"})
    wait_for(lambda: groups(models, "big") == ["big-g0"], 120, "one group left")
    wait_for(lambda: whole(1), 60, "1 whole group Ready")
    names = lambda: sorted(p.metadata.name for p in models.pods("big"))  # noqa: E731
    wait_for(lambda: names() == ["big-g0-0", "big-g0-1"], 60, "only the first group's pods")
