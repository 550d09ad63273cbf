"""One reconcile pass, without a cluster: children, conditions, events, idle passes."""

from __future__ import annotations

from typing import Any

from tests.unit.builders import A10G, H100, gpu_node, model_dict
from triton_vllm_operator.conditions import Verdict, deployment_readiness, set_condition
from triton_vllm_operator.reconcile import (
    APPLIED_HASH_ANNOTATION,
    Observed,
    plan_reconcile,
    rejected_by_api_server,
    status_changed,
)
from triton_vllm_operator.settings import Settings

NODES = [gpu_node("gpu-h100-0", 8, H100), gpu_node("gpu-a10g-0", 4, A10G)]
SETTINGS = Settings()
NOW = "2026-11-26T00:00:00Z"


def observe(**kw: Any) -> Observed:
    return Observed(
        nodes=kw.get("nodes", NODES),
        pods=kw.get("pods", []),
        child_hashes=kw.get("child_hashes", {}),
        deployment=kw.get("deployment"),
    )


def conditions(plan_status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in plan_status["conditions"]}


def available(replicas: int, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def test_first_pass_applies_three_children_and_says_why_not_ready() -> None:
    plan = plan_reconcile(model_dict(tensorParallelSize=4), observe(), SETTINGS, NOW)
    assert [m["kind"] for m in plan.apply] == ["ConfigMap", "Deployment", "Service"]
    assert conditions(plan.status) == {
        "Accepted": ("True", "Valid"),
        "Scheduled": ("True", "Placed"),
        "Ready": ("False", "Deploying"),
    }
    assert plan.status["tensorParallelSize"] == 4
    assert plan.status["observedGeneration"] == 1
    assert plan.status["endpoint"] == "http://llama.ml.svc:8000/v2/models/llama"
    assert [e[1] for e in plan.events] == ["Valid", "Placed", "Deploying"]


def test_a_converged_model_needs_no_writes() -> None:
    body = model_dict(tensorParallelSize=4)
    first = plan_reconcile(body, observe(), SETTINGS, NOW)
    hashes = {
        (m["kind"], m["metadata"]["name"]): m["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        for m in first.apply
    }
    body["status"] = first.status
    second = plan_reconcile(
        body, observe(child_hashes=hashes, deployment=available(1)), SETTINGS, NOW
    )
    assert second.apply == []
    assert conditions(second.status)["Ready"] == ("True", "ModelServing")
    assert second.status["readyReplicas"] == 1
    body["status"] = second.status
    third = plan_reconcile(
        body, observe(child_hashes=hashes, deployment=available(1)), SETTINGS, "later"
    )
    assert third.apply == [] and third.events == []
    assert not status_changed(body["status"], third.status)


def test_unknown_engine_arg_is_not_accepted_and_creates_nothing() -> None:
    plan = plan_reconcile(model_dict(engineArgs={"max_modle_len": 10}), observe(), SETTINGS, NOW)
    assert plan.apply == []
    status, reason = conditions(plan.status)["Accepted"]
    assert (status, reason) == ("False", "InvalidEngineArgs")
    message = plan.status["conditions"][0]["message"]
    assert "did you mean 'max_model_len'" in message
    assert plan.events[0][0] == "Warning"


def test_invalid_spec_shape_is_reported_field_by_field() -> None:
    plan = plan_reconcile(
        model_dict(replicas=-1, gpu={"minMemoryGiB": 0}), observe(), SETTINGS, NOW
    )
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidSpec")
    message = plan.status["conditions"][0]["message"]
    assert "spec.replicas: Input should be greater than or equal to 0" in message
    assert "spec.gpu.minMemoryGiB" in message


def test_tp_that_fits_no_node_is_unscheduled_without_children() -> None:
    plan = plan_reconcile(model_dict(tensorParallelSize=16), observe(), SETTINGS, NOW)
    assert plan.apply == []
    assert conditions(plan.status)["Scheduled"] == ("False", "NoNodeFits")
    assert conditions(plan.status)["Ready"] == ("False", "Unschedulable")
    assert ("Warning", "NoNodeFits") in [(e[0], e[1]) for e in plan.events]
    assert plan.status["tensorParallelSize"] is None


def test_own_pods_do_not_block_the_model_from_its_gpus() -> None:
    own = {
        "metadata": {"namespace": "ml", "labels": {"tritonvllm.io/model": "llama"}},
        "spec": {
            "nodeName": "gpu-h100-0",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Running"},
    }
    plan = plan_reconcile(
        model_dict(tensorParallelSize=8), observe(nodes=NODES[:1], pods=[own]), SETTINGS, NOW
    )
    assert "wait for GPUs" not in plan.status["conditions"][1]["message"]
    other = {**own, "metadata": {"namespace": "ml", "labels": {}}}
    plan = plan_reconcile(
        model_dict(tensorParallelSize=8), observe(nodes=NODES[:1], pods=[other]), SETTINGS, NOW
    )
    assert "free GPUs for 0 of 1 replicas now" in plan.status["conditions"][1]["message"]


def test_replicas_change_reapplies_only_the_deployment() -> None:
    body = model_dict(tensorParallelSize=1)
    first = plan_reconcile(body, observe(), SETTINGS, NOW)
    hashes = {
        (m["kind"], m["metadata"]["name"]): m["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        for m in first.apply
    }
    scaled = plan_reconcile(
        model_dict(tensorParallelSize=1, replicas=3), observe(child_hashes=hashes), SETTINGS, NOW
    )
    assert [m["kind"] for m in scaled.apply] == ["Deployment"]
    assert scaled.status["configHash"] == first.status["configHash"]


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
        url = "http://x"
        assert deployment_readiness(available(2), 2, url)[0].reason == "ModelServing"
        assert deployment_readiness(available(1), 2, url)[0].reason == "RollingOut"
        half = available(2)
        half["status"]["readyReplicas"] = 1
        verdict, ready = deployment_readiness(half, 2, url)
        assert (verdict.reason, ready) == ("PodsNotReady", 1)
        stale = available(2, generation=3)
        stale["status"]["observedGeneration"] = 2
        assert deployment_readiness(stale, 2, url)[0].reason == "RollingOut"
        failed = available(0)
        failed["status"]["conditions"] = [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]
        assert deployment_readiness(failed, 1, url)[0].reason == "RolloutFailed"
        assert deployment_readiness(available(0), 0, url)[0].reason == "ScaledToZero"


def test_a_child_the_api_server_refuses_keeps_every_condition_reasoned() -> None:
    body = model_dict(tensorParallelSize=1)
    planned = plan_reconcile(body, observe(), SETTINGS, NOW)
    plan = rejected_by_api_server(body, planned, "Deployment llama: bad toleration", NOW)
    assert conditions(plan.status) == {
        "Accepted": ("False", "RejectedByAPIServer"),
        "Scheduled": ("True", "Placed"),
        "Ready": ("False", "NotAccepted"),
    }
    assert ("Warning", "RejectedByAPIServer") in [(e[0], e[1]) for e in plan.events]
    body["status"] = plan.status
    again = rejected_by_api_server(body, planned, "Deployment llama: bad toleration", NOW)
    assert again.events == []  # no event storm while nothing changes
