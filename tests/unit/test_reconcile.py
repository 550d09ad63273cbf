"""One reconcile pass, without a cluster: what it writes, deletes and reports, pass after pass."""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.builders import A10G, H100, gpu_node, model_dict
from triton_vllm_operator.conditions import Verdict, deployment_readiness, set_condition
from triton_vllm_operator.reconcile import (
    Observed,
    OwnPod,
    Plan,
    plan_reconcile,
    refused,
    status_changed,
)
from triton_vllm_operator.settings import Settings

NODES = [gpu_node("gpu-h100-0", 8, H100), gpu_node("gpu-a10g-0", 4, A10G)]
SETTINGS = Settings()
NOW = "2026-12-01T00:00:00Z"


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def message(status: dict[str, Any], type_: str) -> str:
    return next(c["message"] for c in status["conditions"] if c["type"] == type_)


def stored(manifest: dict[str, Any], ready: int | None = None) -> dict[str, Any]:
    """The object as the API server keeps it after an apply: defaults and status added."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(generation=1, resourceVersion="1", uid="u-" + obj["metadata"]["name"])
    obj["metadata"]["annotations"] = {
        **obj["metadata"].get("annotations", {}),
        "deployment.kubernetes.io/revision": "1",
    }
    if obj["kind"] == "Deployment":
        obj["spec"]["revisionHistoryLimit"] = 10
        replicas = obj["spec"]["replicas"]
        done = replicas if ready is None else ready
        obj["status"] = {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": done,
            "availableReplicas": done,
        }
    if obj["kind"] == "Service":
        obj["spec"]["clusterIP"] = "10.96.0.10"
    return obj


def world(plan: Plan, *, ready: int | None = None, **kw: Any) -> Observed:
    """What the watches would show once `plan` was carried out and the pods came up."""
    children = {(m["kind"], m["metadata"]["name"]): stored(m, ready) for m in plan.apply}
    children.update(kw.pop("children", {}))
    return Observed(nodes=kw.pop("nodes", NODES), pods=kw.pop("pods", []), children=children, **kw)


def empty(**kw: Any) -> Observed:
    return Observed(nodes=kw.pop("nodes", NODES), pods=kw.pop("pods", []), **kw)


def converge(body: dict[str, Any], observed: Observed) -> Plan:
    plan = plan_reconcile(body, observed, SETTINGS, NOW)
    body["status"] = plan.status
    return plan


def serving(**spec: Any) -> tuple[dict[str, Any], Plan, Observed]:
    """A model whose children exist and whose pods all serve."""
    body = model_dict(**spec)
    first = converge(body, empty())
    observed = world(first)
    converge(body, observed)
    return body, first, observed


def test_first_pass_applies_the_children_and_says_why_not_ready() -> None:
    plan = plan_reconcile(model_dict(tensorParallelSize=4), empty(), SETTINGS, NOW)
    assert [m["kind"] for m in plan.apply] == ["ConfigMap", "Deployment", "Service"]
    assert conditions(plan.status) == {
        "Accepted": ("True", "Valid"),
        "Scheduled": ("True", "Placed"),
        "Ready": ("False", "Deploying"),
    }
    assert plan.status["tensorParallelSize"] == 4
    assert plan.status["endpoint"] == "http://llama.ml.svc:8000/v2/models/llama"
    assert plan.status["configMap"] == plan.apply[0]["metadata"]["name"]


def test_a_converged_model_needs_no_writes_and_posts_nothing() -> None:
    body, _, observed = serving(tensorParallelSize=4)
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")
    again = plan_reconcile(body, observed, SETTINGS, "later")
    assert again.apply == [] and again.delete == [] and again.events == []
    assert not status_changed(body["status"], again.status)


def test_a_new_config_is_rolling_out_until_the_deployment_has_rolled_it() -> None:
    body, _, observed = serving(tensorParallelSize=1, replicas=2)
    body["spec"]["engineArgs"] = {"max_model_len": 8192}
    body["metadata"]["generation"] = 2
    plan = converge(body, observed)  # the Deployment seen is the old one
    assert [m["kind"] for m in plan.apply] == ["ConfigMap", "Deployment"]
    assert conditions(plan.status)["Ready"] == ("False", "RollingOut")
    # Applied, but the Deployment controller has not observed it yet.
    new = stored(next(m for m in plan.apply if m["kind"] == "Deployment"))
    new["metadata"]["generation"] = 2
    children = {**observed.children, ("Deployment", "llama"): new}
    plan = converge(body, empty(children=children))
    assert conditions(plan.status)["Ready"] == ("False", "RollingOut")
    # Observed, one of two pods updated, the old one still running.
    new["status"] = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 1,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    plan = converge(body, empty(children=children))
    assert conditions(plan.status)["Ready"] == ("False", "RollingOut")
    assert "1 of 2 replicas updated" in message(plan.status, "Ready")
    new["status"].update(replicas=2, updatedReplicas=2)
    plan = converge(body, empty(children=children))
    assert conditions(plan.status)["Ready"] == ("True", "ModelServing")
    assert plan.status["conditions"][2]["observedGeneration"] == 2


def test_a_bigger_node_joining_keeps_the_placement_of_a_serving_model() -> None:
    body, first, _observed = serving(modelSizeGiB=90)
    assert body["status"]["tensorParallelSize"] == 2
    h200 = gpu_node("gpu-h200-0", 8, ("NVIDIA-H200", 143771))
    plan = plan_reconcile(body, world(first, nodes=[*NODES, h200]), SETTINGS, NOW)
    assert plan.apply == []
    assert plan.status["tensorParallelSize"] == 2
    # A new spec may be placed afresh.
    body["spec"]["engineArgs"] = {"max_model_len": 4096}
    replaced = plan_reconcile(body, world(first, nodes=[*NODES, h200]), SETTINGS, NOW)
    assert replaced.status["tensorParallelSize"] == 1


def test_a_cordoned_or_notready_node_does_not_flip_a_serving_model() -> None:
    body, first, _ = serving(tensorParallelSize=8, gpu={"product": H100[0]})
    bound = OwnPod("llama-1", body["status"]["configHash"], None, ("True", "", ""))
    for node in (
        gpu_node("gpu-h100-0", 8, H100, cordoned=True),
        gpu_node("gpu-h100-0", 8, H100, ready=False),
    ):
        plan = plan_reconcile(body, world(first, nodes=[node], own_pods=[bound]), SETTINGS, NOW)
        assert plan.apply == []
        assert conditions(plan.status)["Scheduled"] == ("True", "Placed")
        assert conditions(plan.status)["Ready"] == ("True", "ModelServing")


def test_explicit_tp_with_no_node_that_fits_still_renders_pods_for_an_autoscaler() -> None:
    body = model_dict(tensorParallelSize=16)
    plan = converge(body, empty())
    assert [m["kind"] for m in plan.apply] == ["ConfigMap", "Deployment", "Service"]
    gpus = plan.apply[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpus["nvidia.com/gpu"] == 16
    assert conditions(plan.status)["Scheduled"] == ("False", "NotEnoughGPUs")
    assert "wait for such a node" in message(plan.status, "Scheduled")
    # Once the pod exists, the scheduler's own verdict is reported.
    pending = OwnPod(
        "llama-abc",
        body["status"]["configHash"],
        plan.status["configMap"],
        ("False", "Unschedulable", "0/5 nodes are available: 5 Insufficient nvidia.com/gpu"),
    )
    plan = converge(body, world(plan, ready=0, own_pods=[pending]))
    assert conditions(plan.status)["Scheduled"] == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in message(plan.status, "Scheduled")
    assert conditions(plan.status)["Ready"] == ("False", "PodsNotReady")


def test_auto_without_a_size_and_without_nodes_renders_nothing_and_says_what_would() -> None:
    plan = plan_reconcile(model_dict(), empty(nodes=[]), SETTINGS, NOW)
    assert plan.apply == []
    assert conditions(plan.status)["Scheduled"] == ("False", "NoGPUNodes")
    assert "spec.gpu.minMemoryGiB" in message(plan.status, "Scheduled")
    sized = plan_reconcile(
        model_dict(modelSizeGiB=140, gpu={"minMemoryGiB": 80}), empty(nodes=[]), SETTINGS, NOW
    )
    assert sized.status["tensorParallelSize"] == 4
    assert [m["kind"] for m in sized.apply][:2] == ["ConfigMap", "Deployment"]


def test_each_config_gets_its_own_immutable_configmap_removed_when_unused() -> None:
    body, first, observed = serving(tensorParallelSize=1, engineArgs={"max_model_len": 4096})
    old_cm = body["status"]["configMap"]
    assert first.apply[0]["immutable"] is True
    body["spec"]["engineArgs"] = {"max_model_len": 8192}
    plan = converge(body, observed)
    new_cm = plan.status["configMap"]
    assert new_cm != old_cm and plan.delete == []  # the live Deployment still mounts the old one
    after = world(plan, children=observed.children)
    after_children = dict(after.children)
    after_children[("Deployment", "llama")] = stored(plan.apply[1])
    old_pod = OwnPod("llama-old", "x", old_cm, ("True", "", ""), terminating=True)
    still = converge(body, empty(children=after_children, own_pods=[old_pod]))
    assert still.delete == []  # a terminating pod still mounts it
    gone = converge(body, empty(children=after_children))
    assert gone.delete == [("ConfigMap", old_cm)]
    # Rolling back renders the very same ConfigMap again, after it was removed.
    del after_children[("ConfigMap", old_cm)]
    body["spec"]["engineArgs"] = {"max_model_len": 4096}
    back = converge(body, empty(children=after_children))
    assert back.status["configMap"] == old_cm
    assert back.apply[0] == first.apply[0]


def test_a_configmap_stays_while_an_old_replicaset_with_replicas_mounts_it() -> None:
    """A rollout that stalls (or a rollback) scales the old ReplicaSet back up: its pods need
    their config even when no pod of it runs right now."""
    body, first, observed = serving(tensorParallelSize=1, engineArgs={"max_model_len": 4096})
    old_cm = body["status"]["configMap"]
    old_template = copy.deepcopy(first.apply[1]["spec"]["template"])
    body["spec"]["engineArgs"] = {"max_model_len": 8192}
    plan = converge(body, observed)
    children = dict(world(plan, children=observed.children).children)
    children[("Deployment", "llama")] = stored(plan.apply[1])
    old_rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "llama-6d4f", "namespace": "ml"},
        "spec": {"replicas": 1, "template": old_template},
    }
    children[("ReplicaSet", "llama-6d4f")] = old_rs
    assert converge(body, empty(children=children)).delete == []
    old_rs["spec"]["replicas"] = 0  # scaled down for good: its config may go
    assert converge(body, empty(children=children)).delete == [("ConfigMap", old_cm)]


def test_a_surge_pod_that_cannot_schedule_turns_the_rollout_into_replacements() -> None:
    """The GPUs free when the rollout began were taken: waiting would end only at the progress
    deadline (40 minutes), so the pods are replaced one at a time instead."""
    body, _, observed = serving(tensorParallelSize=1, replicas=2)
    body["spec"]["engineArgs"] = {"max_model_len": 8192}
    body["metadata"]["generation"] = 2
    plan = converge(body, observed)
    deployment = stored(next(m for m in plan.apply if m["kind"] == "Deployment"))
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    new_hash = plan.status["configHash"]
    pods = [
        OwnPod("llama-a", "old-config", None, ("True", "", "")),
        OwnPod("llama-b", "old-config", None, ("True", "", "")),
        OwnPod("llama-c", new_hash, None, ("False", "Unschedulable", "0/2 nodes: Insufficient")),
    ]
    children = {**world(plan, children=observed.children).children}
    children[("Deployment", "llama")] = deployment
    stuck = converge(body, empty(children=children, own_pods=pods))
    replanned = next(m for m in stuck.apply if m["kind"] == "Deployment")
    assert replanned["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert any(e[1] == "SurgeUnschedulable" for e in stuck.events)
    # Once applied, the replacement strategy is kept for the rest of this rollout.
    children[("Deployment", "llama")] = stored(replanned)
    assert converge(body, empty(children=children, own_pods=pods)).apply == []


def test_hand_edits_are_reverted_and_fields_of_others_left_alone() -> None:
    body, _, observed = serving(tensorParallelSize=1)
    edited = copy.deepcopy(dict(observed.children))
    edited[("Deployment", "llama")]["spec"]["template"]["spec"]["containers"][0]["image"] = "x:1"
    plan = plan_reconcile(body, empty(children=edited), SETTINGS, NOW)
    assert [m["kind"] for m in plan.apply] == ["Deployment"]
    others = copy.deepcopy(dict(observed.children))
    service = others[("Service", "llama")]
    service["metadata"]["annotations"]["team"] = "web"
    service["metadata"]["labels"]["extra"] = "yes"
    service["spec"]["ports"].append({"name": "debug", "port": 9999})
    assert plan_reconcile(body, empty(children=others), SETTINGS, NOW).apply == []
    missing = {k: v for k, v in observed.children.items() if k[0] != "Service"}
    plan = plan_reconcile(body, empty(children=missing), SETTINGS, NOW)
    assert [m["kind"] for m in plan.apply] == ["Service"]


def test_replicas_change_reapplies_the_deployment_and_adds_a_disruption_budget() -> None:
    body, first, observed = serving(tensorParallelSize=1)
    body["spec"]["replicas"] = 3
    scaled = converge(body, observed)
    assert [m["kind"] for m in scaled.apply] == ["Deployment", "PodDisruptionBudget"]
    assert scaled.status["configHash"] == first.status["configHash"]
    pdb = scaled.apply[1]
    assert pdb["spec"]["maxUnavailable"] == 1
    children = {**observed.children, ("PodDisruptionBudget", "llama"): stored(pdb)}
    body["spec"]["replicas"] = 1
    down = converge(body, empty(children=children))
    assert ("PodDisruptionBudget", "llama") in down.delete


def test_rollouts_surge_when_gpus_are_free_and_replace_in_place_when_not() -> None:
    plan = plan_reconcile(model_dict(tensorParallelSize=8), empty(), SETTINGS, NOW)
    strategy = plan.apply[1]["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}
    one_node = [gpu_node("gpu-h100-0", 8, H100)]
    plan = plan_reconcile(model_dict(tensorParallelSize=8), empty(nodes=one_node), SETTINGS, NOW)
    assert plan.apply[1]["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
    }
    busy = {
        "spec": {
            "nodeName": "gpu-h100-0",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Running"},
    }
    plan = plan_reconcile(
        model_dict(tensorParallelSize=8), empty(nodes=one_node, own_gpu_pods=[busy]), SETTINGS, NOW
    )
    assert plan.apply[1]["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    assert plan.apply[1]["spec"]["progressDeadlineSeconds"] > 1800


def test_free_gpus_changing_alone_writes_nothing() -> None:
    body, first, _observed = serving(tensorParallelSize=8, gpu={"product": H100[0]})
    busy = {
        "spec": {
            "nodeName": "gpu-h100-0",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Running"},
    }
    plan = plan_reconcile(body, world(first, own_gpu_pods=[busy]), SETTINGS, NOW)
    assert plan.apply == []


def test_unknown_engine_arg_is_not_accepted_and_creates_nothing() -> None:
    plan = plan_reconcile(model_dict(engineArgs={"max_modle_len": 10}), empty(), SETTINGS, NOW)
    assert plan.apply == []
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidEngineArgs")
    assert "did you mean 'max_model_len'" in message(plan.status, "Accepted")
    assert plan.events[0][0] == "Warning"


def test_invalid_spec_shape_is_reported_field_by_field() -> None:
    plan = plan_reconcile(model_dict(replicas=-1, gpu={"minMemoryGiB": 0}), empty(), SETTINGS, NOW)
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidSpec")
    text = message(plan.status, "Accepted")
    assert "spec.replicas: Input should be greater than or equal to 0" in text
    assert "spec.gpu.minMemoryGiB" in text


def test_a_name_that_cannot_name_a_service_is_not_accepted() -> None:
    plan = plan_reconcile(model_dict("llama.v1", tensorParallelSize=1), empty(), SETTINGS, NOW)
    assert plan.apply == []
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidName")
    assert "names the model's Service" in message(plan.status, "Accepted")


def test_a_refused_child_keeps_every_condition_reasoned_and_repeats_nothing() -> None:
    body = model_dict(tensorParallelSize=1)
    planned = plan_reconcile(body, empty(), SETTINGS, NOW)
    plan = refused(body, planned, "RejectedByAPIServer", "Deployment llama: bad toleration", NOW)
    assert conditions(plan.status) == {
        "Accepted": ("False", "RejectedByAPIServer"),
        "Scheduled": ("True", "Placed"),
        "Ready": ("False", "NotAccepted"),
    }
    assert ("Warning", "RejectedByAPIServer") in [(e[0], e[1]) for e in plan.events]
    body["status"] = plan.status
    planned = plan_reconcile(body, empty(), SETTINGS, "later")
    again = refused(body, planned, "RejectedByAPIServer", "Deployment llama: bad toleration", "x")
    assert again.events == []
    assert not status_changed(body["status"], again.status)


def test_a_name_taken_by_another_object_is_said_in_ready() -> None:
    body = model_dict(tensorParallelSize=1)
    planned = plan_reconcile(body, empty(), SETTINGS, NOW)
    plan = refused(body, planned, "NameConflict", "Service llama already exists", NOW)
    assert conditions(plan.status)["Ready"] == ("False", "NameConflict")
    assert conditions(plan.status)["Accepted"] == ("True", "Valid")


class TestConditions:
    def test_transition_time_kept_unless_status_flips(self) -> None:
        start = set_condition([], Verdict("Ready", "False", "Deploying", "m"), 1, "t1")
        same = set_condition(start, Verdict("Ready", "False", "PodsNotReady", "m2"), 2, "t2")
        assert same[0]["lastTransitionTime"] == "t1"
        assert same[0]["observedGeneration"] == 2
        flipped = set_condition(same, Verdict("Ready", "True", "ModelServing", "m3"), 2, "t3")
        assert flipped[0]["lastTransitionTime"] == "t3"

    def test_conditions_keep_a_stable_order(self) -> None:
        conds = set_condition([], Verdict("Ready", "False", "r", ""), 1, "t")
        conds = set_condition(conds, Verdict("Accepted", "True", "r", ""), 1, "t")
        assert [c["type"] for c in conds] == ["Accepted", "Ready"]

    def test_readiness_from_the_deployment(self) -> None:
        def deployment(replicas: int, ready: int, config: str = "c") -> dict[str, Any]:
            return {
                "metadata": {"generation": 1},
                "spec": {
                    "template": {"metadata": {"annotations": {"tritonvllm.io/config-hash": config}}}
                },
                "status": {
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                },
            }

        def reason(obj: dict[str, Any] | None, replicas: int, applying: bool = False) -> str:
            return deployment_readiness(obj, replicas, "c", "http://x", applying)[0].reason

        assert reason(deployment(2, 2), 2) == "ModelServing"
        assert reason(deployment(2, 2), 2, applying=True) == "RollingOut"
        assert reason(deployment(2, 2, config="old"), 2) == "RollingOut"
        assert reason(deployment(1, 1), 2) == "RollingOut"
        assert reason(deployment(2, 1), 2) == "PodsNotReady"
        assert reason(None, 1) == "Deploying"
        stale = deployment(2, 2)
        stale["metadata"]["generation"] = 3
        assert reason(stale, 2) == "RollingOut"
        failed = deployment(1, 0)
        failed["status"]["conditions"] = [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]
        assert reason(failed, 1) == "RolloutFailed"
        assert reason(deployment(0, 0), 0) == "ScaledToZero"


def test_pods_refused_at_admission_say_scheduled_false_with_the_api_servers_message() -> None:
    body = model_dict(tensorParallelSize=1)
    observed = world(converge(body, empty()), ready=0)
    deployment = observed.children[("Deployment", "llama")]
    deployment["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "llama-5d9c-x" is forbidden: exceeded quota: no-gpus, requested: '
            "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=0, limited: "
            "requests.nvidia.com/gpu=0",
        }
    ]
    plan = converge(body, observed)
    assert conditions(plan.status)["Scheduled"] == ("False", "FailedCreate")
    assert "exceeded quota: no-gpus" in message(plan.status, "Scheduled")
    assert ("Warning", "FailedCreate") in [(kind, reason) for kind, reason, _ in plan.events]


def test_pipeline_parallel_pods_request_tp_times_pp_gpus() -> None:
    body = model_dict(tensorParallelSize=2, engineArgs={"pipeline_parallel_size": 2})
    plan = converge(body, empty())
    deployment = next(m for m in plan.apply if m["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert conditions(plan.status)["Scheduled"] == ("True", "Placed")
    assert plan.status["tensorParallelSize"] == 2


def test_a_pipeline_parallel_size_below_one_is_not_accepted_and_says_what_to_set() -> None:
    plan = converge(
        model_dict(tensorParallelSize=1, engineArgs={"pipeline_parallel_size": 0}), empty()
    )
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidEngineArgs")
    assert "pipeline_parallel_size must be a positive integer" in message(plan.status, "Accepted")
    assert plan.apply == []
