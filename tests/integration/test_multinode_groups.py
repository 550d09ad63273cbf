"""A model bigger than a node on the real control plane with kwok GPU nodes: each replica a
group of pods on distinct nodes, ranks and nodes in status, Ready once every rank runs."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

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
from tests.kube import add_gpu_node, remove_node

__all__ = ["models", "operator"]  # fixtures


def uid_of(models: Models, pod: str) -> str | None:
    try:
        uid: str = models.core.read_namespaced_pod(pod, models.namespace).metadata.uid
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return uid


def group_restarts(models: Models, name: str) -> list[str]:
    """The messages of the model's GroupRestarted Events."""
    return [e.message for e in models.events(name) if e.reason == "GroupRestarted"]


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
        # A member lost (its pod deleted): the operator restarts the whole group (rank 0's
        # engine cannot go on without rank 1), says so, and the group forms again.
        leader = uid_of(models, "llama-405b-g0-0")
        models.core.delete_namespaced_pod("llama-405b-g0-1", models.namespace)
        restarted = wait_for(lambda: group_restarts(models, "llama-405b"), 60, "GroupRestarted")
        assert "llama-405b-g0 rank 1 (llama-405b-g0-1 on " in restarted[0]
        wait_for(lambda: uid_of(models, "llama-405b-g0-0") not in (None, leader), 60, "rank 0 anew")
        models.wait_condition("llama-405b", "Ready", "True", timeout=120)
    finally:
        models.custom.delete_namespaced_custom_object(
            GROUP, VERSION, models.namespace, PLURAL, "llama-405b"
        )
        wait_for(lambda: not models.pods("llama-405b"), 60, "the group's pods to go")


# GPUs of their own for the next test, so that its nodes can be removed: 3 nodes of 8.
NVL = "NVIDIA-H100-NVL"
NVL_NODES = [f"nvl-{i}" for i in range(3)]


def test_auto_spans_two_nodes_restarts_a_group_on_a_lost_node_and_rolls_out(
    models: Models,
) -> None:
    for node in NVL_NODES:
        add_gpu_node(node, 8, NVL, 95830)
    try:
        models.create(
            "big",
            model="meta-llama/Llama-3.1-405B-Instruct",
            modelSizeGiB=760,
            nodesPerReplica="auto",
            gpu={"product": NVL},
        )
        models.wait_condition("big", "Ready", "True", timeout=120)
        status = models.get("big")["status"]
        # 760 GiB does not fit one node of 8 x 94 GB: auto chose two nodes of TP 8.
        assert (status["nodesPerReplica"], status["tensorParallelSize"]) == (2, 8)
        assert "x 2 nodes a replica" in models.condition("big", "Scheduled")["message"]
        # The node of rank 1 is removed (drained, deleted): the group is restarted whole and
        # forms again on the nodes left.
        lost = next(r["node"] for r in status["ranks"] if r["rank"] == 1)
        before = len(group_restarts(models, "big"))
        remove_node(lost)
        wait_for(lambda: len(group_restarts(models, "big")) > before, 90, "GroupRestarted")

        def whole_without_lost_node() -> bool:
            ranks = models.get("big")["status"].get("ranks") or []
            nodes = {r["node"] for r in ranks if r["ready"]}
            return len(nodes) == 2 and lost not in nodes

        wait_for(whole_without_lost_node, 120, "the group on the two nodes left")
        models.wait_condition("big", "Ready", "True", timeout=120)
        # A new config rolls out to the group and the model is Ready on it.
        old_config = models.get("big")["status"]["configHash"]
        models.patch_spec("big", engineArgs={"max_model_len": 8192})

        def rolled() -> bool:
            status = models.get("big")["status"]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            return status["configHash"] != old_config and ready["status"] == "True"

        wait_for(rolled, 120, "the new config Ready")
        group = models.apps.read_namespaced_stateful_set("big-g0", models.namespace)
        annotations = group.spec.template.metadata.annotations
        assert annotations["tritonvllm.io/config-hash"] == models.get("big")["status"]["configHash"]
    finally:
        models.custom.delete_namespaced_custom_object(
            GROUP, VERSION, models.namespace, PLURAL, "big"
        )
        wait_for(lambda: not models.pods("big"), 60, "the group's pods to go")
        for node in NVL_NODES:
            remove_node(node)
