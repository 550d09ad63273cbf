"""spec.autoscaling: the autoscaler rendered for the Deployment, and the replicas left to it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.builders import model, model_dict
from tests.unit.test_reconcile import NODES, NOW, conditions, message, stored
from triton_vllm_operator.reconcile import Observed, Plan, plan_reconcile
from triton_vllm_operator.render.autoscaling import plan_autoscaler, quantity
from triton_vllm_operator.settings import Settings

PROMETHEUS = "http://prometheus.monitoring:9090"
SETTINGS = Settings(prometheus_address=PROMETHEUS)
WAKE = {"activationQuery": 'sum(gateway_queue{model="llama"})', "activationThreshold": 1}


def applied(plan: Plan, kind: str) -> dict[str, Any]:
    return next(m for m in plan.apply if m["kind"] == kind)


def kinds(plan: Plan) -> list[str]:
    return [m["kind"] for m in plan.apply]


def converge(body: dict[str, Any], observed: Observed, settings: Settings = SETTINGS) -> Plan:
    plan = plan_reconcile(body, observed, settings, NOW)
    body["status"] = plan.status
    return plan


def after(
    plan: Plan, keda: bool, children: dict[Any, Any] | None = None, **replicas: int
) -> Observed:
    """The world once `plan` is applied; `deployment_replicas` as the autoscaler set them."""
    live = {}
    for manifest in plan.apply:
        obj = copy.deepcopy(manifest)
        if obj["kind"] == "Deployment":
            obj["spec"].setdefault("replicas", replicas.get("deployment_replicas", 1))
        live[(obj["kind"], obj["metadata"]["name"])] = stored(obj)
    live.update(children or {})
    return Observed(nodes=NODES, pods=[], children=live, keda_served=keda)


def test_keda_gets_a_scaled_object_on_the_models_own_queue_and_the_deployment_no_replicas() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    assert "replicas" not in applied(plan, "Deployment")["spec"]
    scaled = applied(plan, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["ownerReferences"][0]["kind"] == "TritonVLLMModel"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 300}
    }
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": PROMETHEUS,
        "query": 'sum(vllm:num_requests_waiting{namespace="ml",model_name="llama"})',
        "threshold": "2",
        "ignoreNullValues": "true",
    }
    assert "cooldownPeriod" not in spec  # it only matters for the last step to zero
    assert conditions(plan.status)["Autoscaling"] == ("True", "KEDA")
    assert "1-4 replicas" in message(plan.status, "Autoscaling")
    assert plan.status["autoscaler"] == "ScaledObject/llama"


def test_the_autoscalers_replica_count_is_kept_reported_and_never_applied_back() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 4})
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    observed = after(first, keda=True, deployment_replicas=3)
    second = converge(body, observed)
    assert second.apply == [] and second.delete == []
    assert body["status"]["replicas"] == 3
    assert body["status"]["currentReplicas"] == 3
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")
    assert body["status"]["selector"] == (
        "app.kubernetes.io/instance=llama,app.kubernetes.io/name=triton-vllm"
    )


def test_scale_to_zero_wakes_on_the_activation_query_and_says_so_when_at_zero() -> None:
    spec = {"minReplicas": 0, "maxReplicas": 2, "scaleToZero": {**WAKE, "idleSeconds": 120}}
    body = model_dict(tensorParallelSize=1, autoscaling=spec)
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    scaled = applied(plan, "ScaledObject")["spec"]
    assert scaled["minReplicaCount"] == 0
    assert scaled["cooldownPeriod"] == 120
    assert scaled["initialCooldownPeriod"] == 120
    engine, wake = scaled["triggers"]
    assert engine["name"] == "engine"
    assert wake["metadata"]["query"] == WAKE["activationQuery"]
    assert wake["metadata"]["activationThreshold"] == "1"
    assert wake["metadata"]["ignoreNullValues"] == "true"
    observed = after(plan, keda=True, deployment_replicas=0)
    converge(body, observed)
    assert conditions(body["status"])["Ready"] == ("False", "ScaledToZero")
    assert "activation query wakes it" in message(body["status"], "Ready")


def test_min_zero_without_a_signal_from_outside_the_pods_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match=r"scaleToZero\.activationQuery"):
        model(autoscaling={"minReplicas": 0, "maxReplicas": 2})
    with pytest.raises(ValidationError, match="must not exceed"):
        model(autoscaling={"minReplicas": 3, "maxReplicas": 2})
    with pytest.raises(ValidationError, match="cannot both drive"):
        model(replicas=2, autoscaling={"maxReplicas": 2})
    body = model_dict(autoscaling={"minReplicas": 0, "maxReplicas": 2})
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    assert plan.apply == []
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidSpec")
    assert "scaleToZero.activationQuery" in message(plan.status, "Accepted")


def test_without_keda_an_hpa_on_the_pods_metric_and_no_scale_to_zero() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 3, "target": 4})
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=False))
    assert "ScaledObject" not in kinds(plan)
    hpa = applied(plan, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "vllm:num_requests_waiting"},
                "target": {"type": "AverageValue", "averageValue": "4"},
            },
        }
    ]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert conditions(plan.status)["Autoscaling"] == ("True", "HorizontalPodAutoscaler")
    assert "KEDA's CRDs are not served" in message(plan.status, "Autoscaling")

    zero = model_dict(
        tensorParallelSize=1, autoscaling={"minReplicas": 0, "maxReplicas": 3, "scaleToZero": WAKE}
    )
    plan = converge(zero, Observed(nodes=NODES, pods=[], keda_served=False))
    assert applied(plan, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1
    assert conditions(plan.status)["Autoscaling"] == ("False", "ScaleToZeroNeedsKEDA")


def test_keda_installed_later_swaps_the_hpa_for_a_scaled_object() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 3})
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=False))
    observed = after(first, keda=True)
    second = converge(body, observed)
    assert kinds(second) == ["ScaledObject"]
    assert second.delete == [("HorizontalPodAutoscaler", "llama")]
    assert conditions(body["status"])["Autoscaling"] == ("True", "KEDA")


def test_turning_autoscaling_on_and_off_keeps_the_pods_and_the_placement() -> None:
    body = model_dict(tensorParallelSize="auto", modelSizeGiB=15, replicas=2)
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    deployment = applied(first, "Deployment")
    observed = after(first, keda=True)
    converge(body, observed)
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"maxReplicas": 4}
    on = converge(body, observed)
    # The Deployment is not even rewritten: same placement, same pod template, and its replicas
    # kept until the autoscaler changes them.
    assert "Deployment" not in kinds(on)
    live = observed.children[("Deployment", "llama")]
    assert live["spec"]["template"] == deployment["spec"]["template"]
    assert "ScaledObject" in kinds(on)
    observed = after(on, keda=True, children=dict(observed.children), deployment_replicas=2)
    del body["spec"]["autoscaling"]
    off = converge(body, observed)
    assert ("ScaledObject", "llama") in off.delete
    assert applied(off, "Deployment")["spec"]["replicas"] == 1
    assert "Autoscaling" not in conditions(off.status)


def test_switching_to_an_autoscaler_keeps_the_replicas_until_it_changes_them() -> None:
    # Server-side apply would reset replicas the operator stops sending (3 -> 1): it keeps
    # sending the live value until the autoscaler (or kubectl scale) has changed it.
    body = model_dict(tensorParallelSize=1, replicas=3)
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=False))
    observed = after(first, keda=False)
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 5}
    on = converge(body, observed)
    assert kinds(on) == ["HorizontalPodAutoscaler"]  # the Deployment, replicas kept, untouched
    observed = after(on, keda=False, children=dict(observed.children))
    assert converge(body, observed).apply == []  # no write while nothing changed
    # The HPA scales to 4: the field is its own now, and the operator leaves it out.
    deployment = copy.deepcopy(observed.children[("Deployment", "llama")])
    deployment["spec"]["replicas"] = 4
    observed = after(on, keda=False, children={("Deployment", "llama"): deployment})
    scaled = converge(body, observed)
    assert "replicas" not in applied(scaled, "Deployment")["spec"]
    assert body["status"]["replicas"] == 4


def test_no_prometheus_address_says_where_to_set_one_and_renders_no_scaled_object() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 3})
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=True), Settings())
    assert "ScaledObject" not in kinds(plan)
    assert conditions(plan.status)["Autoscaling"] == ("False", "PrometheusAddressUnknown")
    assert "prometheusAddress" in message(plan.status, "Autoscaling")
    body = model_dict(
        tensorParallelSize=1,
        autoscaling={"maxReplicas": 3, "prometheusAddress": "http://prom.example:9090"},
    )
    plan = converge(body, Observed(nodes=NODES, pods=[], keda_served=True), Settings())
    trigger = applied(plan, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["metadata"]["serverAddress"] == "http://prom.example:9090"


def test_keda_not_ready_is_reported_in_the_condition() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 3})
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    observed = after(first, keda=True)
    scaled = dict(observed.children[("ScaledObject", "llama")])
    scaled["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ScaledObjectCheckFailed",
                "message": "prometheus query failed: connection refused",
            }
        ]
    }
    children = {**observed.children, ("ScaledObject", "llama"): scaled}
    converge(body, Observed(nodes=NODES, pods=[], children=children, keda_served=True))
    assert conditions(body["status"])["Autoscaling"] == ("False", "ScaledObjectNotReady")
    assert "connection refused" in message(body["status"], "Autoscaling")


@pytest.mark.parametrize(
    ("autoscaling", "openai", "query", "metric_type", "threshold"),
    [
        (
            {"metric": "KVCacheUsage"},
            True,
            'avg(vllm:kv_cache_usage_perc{namespace="ml",model_name="llama"})',
            "Value",
            "0.8",
        ),
        (
            {"metric": "RequestsRunning", "target": 8},
            True,
            'sum(vllm:num_requests_running{namespace="ml",model_name="llama"})',
            "AverageValue",
            "8",
        ),
        # Without the OpenAI port, Triton's metrics port carries the official names, by `model`.
        (
            {},
            False,
            'sum(vllm:num_requests_waiting{namespace="ml",model="llama"})',
            "AverageValue",
            "2",
        ),
        ({"query": "sum(rate(x[1m]))", "target": 5}, True, "sum(rate(x[1m]))", "AverageValue", "5"),
    ],
)
def test_each_signal_becomes_its_query(
    autoscaling: dict[str, Any], openai: bool, query: str, metric_type: str, threshold: str
) -> None:
    m = model(autoscaling={"maxReplicas": 2, **autoscaling}, openai={"enabled": openai})
    plan = plan_autoscaler(m, keda_served=True, default_prometheus=PROMETHEUS)
    assert plan is not None and plan.manifest is not None
    trigger = plan.manifest["spec"]["triggers"][0]
    assert trigger["metadata"]["query"] == query
    assert trigger["metricType"] == metric_type
    assert trigger["metadata"]["threshold"] == threshold


def test_a_query_needs_keda_and_quantities_are_kubernetes_ones() -> None:
    m = model(autoscaling={"maxReplicas": 2, "query": "sum(x)"})
    plan = plan_autoscaler(m, keda_served=False, default_prometheus=PROMETHEUS)
    assert plan is not None and plan.manifest is None
    assert plan.verdict.reason == "QueryNeedsKEDA"
    assert [quantity(v) for v in (2, 0.8, 2.5)] == ["2", "800m", "2500m"]
    forced = model(autoscaling={"maxReplicas": 2, "provider": "KEDA"})
    plan = plan_autoscaler(forced, keda_served=False, default_prometheus=PROMETHEUS)
    assert plan is not None and plan.verdict.reason == "KEDANotInstalled"


def _scaling(body: dict[str, Any], desired: int, total: int, ready: int, updated: int) -> Plan:
    first = converge(body, Observed(nodes=NODES, pods=[], keda_served=True))
    observed = after(first, keda=True, deployment_replicas=desired)
    live = dict(observed.children[("Deployment", "llama")])
    live["status"] = {
        "observedGeneration": 1,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    children = {**observed.children, ("Deployment", "llama"): live}
    return converge(body, Observed(nodes=NODES, pods=[], children=children, keda_served=True))


def test_scaling_out_or_in_is_not_a_rollout_and_ready_does_not_flap() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 4})
    _scaling(body, desired=3, total=3, ready=1, updated=3)  # two new pods starting
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")
    assert "1 of 3 replicas ready (the autoscaler is scaling)" in message(body["status"], "Ready")
    _scaling(body, desired=1, total=3, ready=3, updated=3)  # two pods going
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")
    # Below the minimum, or old pods of another config, is not serving as asked.
    floor = model_dict(tensorParallelSize=1, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    _scaling(floor, desired=2, total=2, ready=1, updated=2)
    assert conditions(floor["status"])["Ready"] == ("False", "PodsNotReady")
    _scaling(body, desired=2, total=3, ready=3, updated=2)
    assert conditions(body["status"])["Ready"] == ("False", "RollingOut")


def test_the_instant_the_deployment_controller_lags_behind_a_new_count_keeps_ready() -> None:
    body = model_dict(tensorParallelSize=1, autoscaling={"maxReplicas": 4})
    _scaling(body, desired=1, total=1, ready=1, updated=1)
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")
    before = copy.deepcopy(body["status"])
    # The HPA set 3: the Deployment's generation moved, its status not yet.
    first = converge(copy.deepcopy(body), Observed(nodes=NODES, pods=[], keda_served=True))
    observed = after(first, keda=True, deployment_replicas=3)
    live = dict(observed.children[("Deployment", "llama")])
    live["metadata"] = {**live["metadata"], "generation": 2}
    live["status"] = {**live["status"], "observedGeneration": 1, "replicas": 1}
    children = {**observed.children, ("Deployment", "llama"): live}
    plan = converge(body, Observed(nodes=NODES, pods=[], children=children, keda_served=True))
    assert conditions(plan.status)["Ready"] == ("True", "ModelServing")
    assert plan.events == [] and plan.apply == []
    ready = [c for c in plan.status["conditions"] if c["type"] == "Ready"]
    assert ready == [c for c in before["conditions"] if c["type"] == "Ready"]
    # A model whose replicas are its own still waits for the controller.
    fixed = model_dict(tensorParallelSize=1, replicas=1)
    observed = after(converge(fixed, Observed(nodes=NODES, pods=[])), keda=False)
    converge(fixed, observed)
    assert conditions(fixed["status"])["Ready"] == ("True", "ModelServing")
    live = dict(observed.children[("Deployment", "llama")])
    live["metadata"] = {**live["metadata"], "generation": 2}
    children = {**observed.children, ("Deployment", "llama"): live}
    converge(fixed, Observed(nodes=NODES, pods=[], children=children))
    assert conditions(fixed["status"])["Ready"] == ("False", "RollingOut")
