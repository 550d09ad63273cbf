"""Models bigger than a node: each replica a group of pods, one per node, on vLLM's multi-node
runtime; rendered, checked and reported without a cluster."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.builders import H100, gpu_node, model_dict
from tests.unit.test_reconcile import NOW, conditions, message, stored
from triton_vllm_operator.__main__ import render_documents
from triton_vllm_operator.observed import Observed, OwnPod
from triton_vllm_operator.reconcile import plan_reconcile
from triton_vllm_operator.settings import Settings

NODES = [gpu_node(f"h{i}", 8, H100) for i in range(4)]
SETTINGS = Settings()
# A 405B-class model in bf16 (~810 GB) on 8 x 80 GB nodes: two nodes of TP 8 a replica.
BIG = {"model": "meta-llama/Llama-3.1-405B-Instruct", "tensorParallelSize": 8, "nodesPerReplica": 2}


def _render(**spec: Any) -> dict[tuple[str, str], dict[str, Any]]:
    docs = render_documents([model_dict(**{**BIG, **spec})], NODES, SETTINGS)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_render_shows_one_group_of_two_nodes_per_replica() -> None:
    out = _render(replicas=2)
    assert ("Deployment", "llama") not in out
    # One pod of the model at a time may be disrupted: a drain breaks one group, never two.
    assert out[("PodDisruptionBudget", "llama")]["spec"]["maxUnavailable"] == 1
    assert {k for k in out if k[0] == "StatefulSet"} == {
        ("StatefulSet", "llama-g0"),
        ("StatefulSet", "llama-g1"),
    }
    group = out[("StatefulSet", "llama-g0")]["spec"]
    assert group["replicas"] == 2 and group["podManagementPolicy"] == "Parallel"
    assert group["serviceName"] == "llama-ranks"
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8  # TP GPUs on each node
    env = {e["name"]: e for e in container["env"]}
    rank = env["TRITONVLLM_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["TRITONVLLM_MASTER_ADDR"]["value"] == "llama-g0-0.llama-ranks.ml.svc"
    script = container["command"][2]
    assert "exec tritonserver" in script and "tritonvllm_backend.worker" in script
    assert container["args"][0].startswith("--model-repository=")
    (anti,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti == {
        "labelSelector": {"matchLabels": {"tritonvllm.io/group": "llama-g0"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    # The workers serve no HTTP: rank 0's probes pass on them.
    assert "TRITONVLLM_NODE_RANK" in container["readinessProbe"]["exec"]["command"][2]
    ranks = out[("Service", "llama-ranks")]["spec"]
    assert ranks["clusterIP"] == "None" and ranks["publishNotReadyAddresses"] is True
    # Only rank 0 serves.
    assert out[("Service", "llama")]["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    (configmap,) = [v for k, v in out.items() if k[0] == "ConfigMap"]
    engine = json.loads(configmap["data"]["model.json"])
    assert engine["nnodes"] == 2 and engine["pipeline_parallel_size"] == 2
    assert engine["tensor_parallel_size"] == 8 and engine["master_port"] == 29500


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"tensorParallelSize": "auto"}, "needs an integer spec.tensorParallelSize"),
        ({"engineArgs": {"pipeline_parallel_size": 2}}, "remove engineArgs.pipeline_parallel"),
    ],
)
def test_what_multi_node_cannot_take_is_refused_with_what_to_change(
    spec: dict[str, Any], words: str
) -> None:
    body = model_dict(**{**BIG, **spec})
    plan = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidSpec")
    assert words in message(plan.status, "Accepted") and plan.apply == []


def _group_status(sts: dict[str, Any], ready: int) -> dict[str, Any]:
    sts = stored(sts)
    sts["status"] = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": ready,
    }
    return sts


def test_ready_counts_whole_groups_and_status_names_every_rank_and_node() -> None:
    body = model_dict(**BIG, replicas=1)
    first = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    body["status"] = first.status
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    children[("Service", "llama-ranks")]["spec"]["clusterIP"] = "None"  # headless stays so
    group = next(m for m in first.apply if m["kind"] == "StatefulSet")
    config = first.status["configHash"]
    pods = [
        OwnPod("llama-g0-0", config, None, ("True", "", ""), node="h0", ready=True,
               group="llama-g0", rank=0),
        OwnPod("llama-g0-1", config, None, ("True", "", ""), node="h1", ready=False,
               group="llama-g0", rank=1),
    ]  # fmt: skip
    children[("StatefulSet", "llama-g0")] = _group_status(group, ready=1)
    half = plan_reconcile(body, Observed(NODES, [], pods, children=children), SETTINGS, NOW)
    assert conditions(half.status)["Ready"] == ("False", "PodsNotReady")
    assert "Not ready: llama-g0 rank 1 (llama-g0-1) on h1" in message(half.status, "Ready")
    assert half.status["nodesPerReplica"] == 2 and half.status["tensorParallelSize"] == 8
    assert [(r["rank"], r["node"], r["ready"]) for r in half.status["ranks"]] == [
        (0, "h0", True),
        (1, "h1", False),
    ]
    body["status"] = half.status
    children[("StatefulSet", "llama-g0")] = _group_status(group, ready=2)
    whole = plan_reconcile(body, Observed(NODES, [], pods, children=children), SETTINGS, NOW)
    assert conditions(whole.status)["Ready"] == ("True", "ModelServing")
    assert "2 nodes each" in message(whole.status, "Ready")
    assert whole.apply == [] and whole.delete == []


def test_fewer_replicas_remove_their_groups_and_a_shape_change_is_refused() -> None:
    body = model_dict(**BIG, replicas=2)
    first = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    body["spec"]["replicas"] = 1
    fewer = plan_reconcile(body, Observed(NODES, [], children=children), SETTINGS, NOW)
    assert fewer.delete == [("PodDisruptionBudget", "llama"), ("StatefulSet", "llama-g1")]
    single = copy.deepcopy(body)
    single["spec"]["nodesPerReplica"] = 1
    refused = plan_reconcile(single, Observed(NODES, [], children=children), SETTINGS, NOW)
    assert conditions(refused.status)["Accepted"] == ("False", "InvalidSpec")
    assert "delete the model and create it again" in message(refused.status, "Accepted")
    assert refused.apply == [] and refused.delete == []


def test_a_new_config_reaches_one_group_at_a_time() -> None:
    """A group being replaced serves nothing: the second waits until the first is whole."""
    body = model_dict(**BIG, replicas=2)
    first = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    children[("Service", "llama-ranks")]["spec"]["clusterIP"] = "None"
    for name in ("llama-g0", "llama-g1"):
        children[("StatefulSet", name)] = _group_status(children[("StatefulSet", name)], 2)
    body["spec"]["engineArgs"] = {"max_model_len": 8192}
    body["metadata"]["generation"] = 2
    roll = plan_reconcile(body, Observed(NODES, [], children=children), SETTINGS, NOW)
    groups = [m["metadata"]["name"] for m in roll.apply if m["kind"] == "StatefulSet"]
    assert groups == ["llama-g0"]
    assert conditions(roll.status)["Ready"] == ("False", "RollingOut")
    # g0 has the new template, its ranks not all back yet: g1 waits.
    g0 = next(m for m in roll.apply if m["kind"] == "StatefulSet")
    children[("StatefulSet", "llama-g0")] = _group_status(g0, ready=1)
    for m in roll.apply:
        if m["kind"] == "ConfigMap":
            children[("ConfigMap", m["metadata"]["name"])] = stored(m)
    waiting = plan_reconcile(body, Observed(NODES, [], children=children), SETTINGS, NOW)
    assert [m for m in waiting.apply if m["kind"] == "StatefulSet"] == []
    # g0 whole again: now g1.
    children[("StatefulSet", "llama-g0")] = _group_status(g0, ready=2)
    second = plan_reconcile(body, Observed(NODES, [], children=children), SETTINGS, NOW)
    assert [m["metadata"]["name"] for m in second.apply if m["kind"] == "StatefulSet"] == [
        "llama-g1"
    ]


# The same model with nodesPerReplica: auto, sized by its weights (bf16, ~756 GiB): too big for
# one node of 8 x 80 GB, so two nodes of TP 8.
AUTO = {
    "model": "meta-llama/Llama-3.1-405B-Instruct",
    "modelSizeGiB": 756,
    "nodesPerReplica": "auto",
}


def test_auto_spans_the_fewest_nodes_that_hold_a_replica_and_render_shows_the_group() -> None:
    docs = render_documents([model_dict(**AUTO, replicas=1)], NODES, SETTINGS)
    out = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert ("Deployment", "llama") not in out
    group = out[("StatefulSet", "llama-g0")]["spec"]
    assert group["replicas"] == 2
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    (configmap,) = [v for k, v in out.items() if k[0] == "ConfigMap"]
    engine = json.loads(configmap["data"]["model.json"])
    assert (engine["tensor_parallel_size"], engine["pipeline_parallel_size"]) == (8, 2)
    # The status says what auto chose, and Scheduled says why it spans nodes.
    plan = plan_reconcile(model_dict(**AUTO), Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    assert (plan.status["nodesPerReplica"], plan.status["tensorParallelSize"]) == (2, 8)
    assert "tensorParallelSize=8 x 2 nodes a replica" in message(plan.status, "Scheduled")


def test_auto_keeps_one_node_whenever_a_replica_fits_one() -> None:
    small = {**AUTO, "modelSizeGiB": 140}  # a 70B model: TP 4 of one node's 8
    plan = plan_reconcile(model_dict(**small), Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    kinds = {m["kind"] for m in plan.apply}
    assert "Deployment" in kinds and "StatefulSet" not in kinds
    assert (plan.status["nodesPerReplica"], plan.status["tensorParallelSize"]) == (1, 4)


def test_auto_without_enough_nodes_or_with_autoscaling_says_what_one_node_lacks() -> None:
    alone = plan_reconcile(model_dict(**AUTO), Observed(nodes=NODES[:1], pods=[]), SETTINGS, NOW)
    assert conditions(alone.status)["Scheduled"][0] == "False"
    assert "756 GiB of weights" in message(alone.status, "Scheduled")
    scaled = model_dict(**AUTO, autoscaling={"minReplicas": 1, "maxReplicas": 2})
    kept = plan_reconcile(scaled, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    assert conditions(kept.status)["Accepted"] == ("True", "Valid")
    assert not any(m["kind"] == "StatefulSet" for m in kept.apply)
    assert conditions(kept.status)["Scheduled"][0] == "False"


def test_auto_keeps_the_groups_it_chose_while_the_nodes_change() -> None:
    """The node count is recorded on the groups: a node that could hold a replica alone joining
    later does not move the running model (that would be a new shape, refused on a live model)."""
    body = model_dict(**AUTO)
    first = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    body["status"] = first.status
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    children[("Service", "llama-ranks")]["spec"]["clusterIP"] = "None"
    big = gpu_node("b200-0", 8, ("NVIDIA-B200", 1_500_000))  # one node with room for it all
    later = plan_reconcile(body, Observed([*NODES, big], [], children=children), SETTINGS, NOW)
    assert conditions(later.status)["Accepted"] == ("True", "Valid")
    assert later.status["nodesPerReplica"] == 2
    assert not any(m["kind"] in ("Deployment", "StatefulSet") for m in later.apply)


def _rank(rank: int, config: str, uid: str, restarts: int = 0) -> OwnPod:
    return OwnPod(
        f"llama-g0-{rank}", config, None, ("True", "", ""), node=f"h{rank}", ready=True,
        group="llama-g0", rank=rank, uid=uid, restarts=restarts,
    )  # fmt: skip


def _whole_group() -> tuple[dict[str, Any], dict[tuple[str, str], Any], list[OwnPod], str]:
    """A one-replica model whose group of two is whole, and the status that says so."""
    body = model_dict(**BIG, replicas=1)
    first = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, NOW)
    body["status"] = first.status
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    children[("Service", "llama-ranks")]["spec"]["clusterIP"] = "None"
    group = next(m for m in first.apply if m["kind"] == "StatefulSet")
    children[("StatefulSet", "llama-g0")] = _group_status(group, ready=2)
    config = first.status["configHash"]
    pods = [_rank(0, config, "uid-a"), _rank(1, config, "uid-b")]
    whole = plan_reconcile(body, Observed(NODES, [], pods, children=children), SETTINGS, NOW)
    assert conditions(whole.status)["Ready"] == ("True", "ModelServing")
    assert [(r["uid"], r["restarts"]) for r in whole.status["ranks"]] == [
        ("uid-a", 0),
        ("uid-b", 0),
    ]
    body["status"] = whole.status
    return body, children, pods, config


def _group_applied(plan: Any) -> list[int]:
    return [m["spec"]["replicas"] for m in plan.apply if m["kind"] == "StatefulSet"]


def test_a_group_that_loses_a_member_is_restarted_whole_then_formed_again() -> None:
    body, children, pods, _ = _whole_group()
    # Rank 1's pod is deleted (a node drained): rank 0's engine cannot go on without it.
    broken = plan_reconcile(body, Observed(NODES, [], pods[:1], children=children), SETTINGS, NOW)
    assert _group_applied(broken) == [0]
    (event,) = [e for e in broken.events if e[1] == "GroupRestarted"]
    assert event[0] == "Warning"
    assert "llama-g0 rank 1 (llama-g0-1 on h1) is gone" in event[2]
    body["status"] = broken.status
    # At 0, its pods still going: it stays at 0, and Ready says why.
    at_zero = stored(next(m for m in broken.apply if m["kind"] == "StatefulSet"))
    at_zero["metadata"]["generation"] = 2
    at_zero["status"] = {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1}
    children[("StatefulSet", "llama-g0")] = at_zero
    going = [replace(pods[0], terminating=True)]
    held = plan_reconcile(body, Observed(NODES, [], going, children=children), SETTINGS, NOW)
    assert _group_applied(held) == []
    assert conditions(held.status)["Ready"] == ("False", "GroupRestarting")
    assert "Restarting llama-g0 whole" in message(held.status, "Ready")
    assert not [e for e in held.events if e[1] == "GroupRestarted"]
    body["status"] = held.status
    # Its pods gone: back to two ranks, created together.
    at_zero["status"] = {"observedGeneration": 2, "replicas": 0}
    formed = plan_reconcile(body, Observed(NODES, [], [], children=children), SETTINGS, NOW)
    assert _group_applied(formed) == [2]


def test_a_member_whose_container_restarts_restarts_the_group_and_a_group_lost_whole_does_not() -> (
    None
):
    body, children, pods, config = _whole_group()
    restarted = [pods[0], _rank(1, config, "uid-b", restarts=1)]
    plan = plan_reconcile(body, Observed(NODES, [], restarted, children=children), SETTINGS, NOW)
    assert _group_applied(plan) == [0]
    assert any("rank 1 (llama-g0-1 on h1) restarted its container" in e[2] for e in plan.events)
    # Every rank replaced at once (the group already starts anew): nothing to restart.
    anew = [_rank(0, config, "uid-c"), _rank(1, config, "uid-d")]
    plan = plan_reconcile(body, Observed(NODES, [], anew, children=children), SETTINGS, NOW)
    assert _group_applied(plan) == []
    assert not [e for e in plan.events if e[1] == "GroupRestarted"]


def test_an_autoscaler_scales_whole_groups_through_the_models_scale_subresource() -> None:
    settings = Settings(prometheus_address="http://prometheus.monitoring:9090")
    body = model_dict(**BIG, autoscaling={"minReplicas": 1, "maxReplicas": 3})
    first = plan_reconcile(body, Observed(NODES, [], keda_served=True), settings, NOW)
    applied = {(m["kind"], m["metadata"]["name"]): m for m in first.apply}
    # KEDA scales the model itself (no Deployment to scale): its HPA writes spec.replicas.
    target = applied[("ScaledObject", "llama")]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "tritonvllm.io/v1alpha1", "kind": "TritonVLLMModel",
                      "name": "llama"}  # fmt: skip
    assert [k for k in applied if k[0] == "StatefulSet"] == [("StatefulSet", "llama-g0")]
    assert first.status["autoscaler"] == "ScaledObject/llama" and first.status["replicas"] == 1
    # The scale subresource needs spec.replicas: the operator sets the first (its minimum).
    assert first.initial_replicas == 1
    # The scale subresource's selector: the pods that serve and export the engine's metrics.
    assert "apps.kubernetes.io/pod-index=0" in first.status["selector"]
    assert conditions(first.status)["Autoscaling"] == ("True", "KEDA")
    assert "groups of 2 nodes" in message(first.status, "Autoscaling")
    # The autoscaler chose 3 (through the scale subresource): three groups; never above the bound.
    for chosen, groups in ((3, 3), (7, 3)):
        body["spec"]["replicas"] = chosen
        scaled = plan_reconcile(body, Observed(NODES, [], keda_served=True), settings, NOW)
        names = sorted(m["metadata"]["name"] for m in scaled.apply if m["kind"] == "StatefulSet")
        assert names == [f"llama-g{i}" for i in range(groups)]
        assert conditions(scaled.status)["Accepted"] == ("True", "Valid")
        assert scaled.initial_replicas is None  # the autoscaler's own
    # While new groups start, the whole one keeps the model Ready: scaling is not a rollout.
    body["spec"]["replicas"] = 1
    body["status"] = first.status
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    group = children[("StatefulSet", "llama-g0")]
    children[("StatefulSet", "llama-g0")] = _group_status(group, ready=2)
    one = Observed(NODES, [], children=children, keda_served=True)
    assert conditions(plan_reconcile(body, one, settings, NOW).status)["Ready"][0] == "True"
    body["spec"]["replicas"] = 3
    out = plan_reconcile(body, one, settings, NOW)
    assert conditions(out.status)["Ready"] == ("True", "ModelServing")
    assert "1 of 3 groups of 2 nodes whole and ready (the autoscaler is scaling)" in message(
        out.status, "Ready"
    )
    # Without KEDA an HPA scales the model the same way.
    body["spec"].pop("replicas")
    hpa = plan_reconcile(body, Observed(NODES, [], keda_served=False), settings, NOW)
    scaler = next(m for m in hpa.apply if m["kind"] == "HorizontalPodAutoscaler")
    assert scaler["spec"]["scaleTargetRef"]["kind"] == "TritonVLLMModel"


def test_the_gateway_pool_selects_rank_0_of_each_group() -> None:
    body = model_dict(**BIG, gateway={"endpointPicker": {"name": "epp"}})
    plan = plan_reconcile(body, Observed(NODES, [], pool_served=True), SETTINGS, NOW)
    pool = next(m for m in plan.apply if m["kind"] == "InferencePool")
    assert pool["spec"]["selector"]["matchLabels"]["apps.kubernetes.io/pod-index"] == "0"
