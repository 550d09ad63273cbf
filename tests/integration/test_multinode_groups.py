"""A model bigger than a node on the real control plane with kwok GPU nodes: each replica a
group of pods on distinct nodes, ranks and nodes in status, Ready once every rank runs."""

from __future__ import annotations

from tests.integration.models import (
    GROUP,
    H100,
    PLURAL,
    VERSION,
    Models,
    models,
    operator,
    wait_for,
)

__all__ = ["models", "operator"]  # fixtures


def test_a_405b_class_model_runs_as_a_group_of_two_8_gpu_nodes(models: Models) -> None:
    models.create(
        "llama-405b",
        model="meta-llama/Llama-3.1-405B-Instruct",
        modelSizeGiB=760,
        tensorParallelSize=8,
        nodesPerReplica=2,
        gpu={"product": H100},
    )
    try:
        models.wait_condition("llama-405b", "Ready", "True", timeout=120)
        status = models.get("llama-405b")["status"]
        assert status["nodesPerReplica"] == 2 and status["tensorParallelSize"] == 8
        ranks = status["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert all(r["group"] == "llama-405b-g0" and r["ready"] for r in ranks)
        assert len({r["node"] for r in ranks}) == 2  # one rank per node
        group = models.apps.read_namespaced_stateful_set("llama-405b-g0", models.namespace)
        assert group.spec.replicas == 2 and group.spec.service_name == "llama-405b-ranks"
        ranks_service = models.core.read_namespaced_service("llama-405b-ranks", models.namespace)
        assert ranks_service.spec.cluster_ip == "None"
        serving = models.core.read_namespaced_service("llama-405b", models.namespace)
        assert serving.spec.selector["apps.kubernetes.io/pod-index"] == "0"
        # A member lost (its node drained, the pod deleted): the group is not Ready until it is
        # back, then Ready again.
        models.core.delete_namespaced_pod("llama-405b-g0-1", models.namespace)
        models.wait_condition("llama-405b", "Ready", "True", timeout=120)
    finally:
        models.custom.delete_namespaced_custom_object(
            GROUP, VERSION, models.namespace, PLURAL, "llama-405b"
        )
        wait_for(lambda: not models.pods("llama-405b"), 60, "the group's pods to go")
