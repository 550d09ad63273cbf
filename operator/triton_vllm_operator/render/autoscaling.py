"""The autoscaler of a model's Deployment: a KEDA ScaledObject on Prometheus queries of the
engine's own series, or, where KEDA is not installed, a HorizontalPodAutoscaler on Pods metrics
that a custom-metrics adapter serves. Pure: the caller says whether KEDA's CRDs are served.

A model of several nodes a replica has no Deployment: its autoscaler scales the model itself
through the CRD's scale subresource (spec.replicas, the groups; status.selector, rank 0 of each
group), and the operator makes or removes whole groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import API_VERSION, KIND, AutoscalingSpec, TritonVLLMModel, scales_groups
from ..conditions import AUTOSCALING, Verdict
from .manifests import REPLICAS_ANNOTATION, _metadata

# The engine's gauges, by spec.autoscaling.metric: vLLM's name, default target per replica, and
# how the pods' values combine (a queue adds up over the replicas; a fraction is averaged).
ENGINE_METRICS: dict[str, tuple[str, float, str]] = {
    "RequestsWaiting": ("vllm:num_requests_waiting", 2, "sum"),
    "RequestsRunning": ("vllm:num_requests_running", 16, "sum"),
    "KVCacheUsage": ("vllm:kv_cache_usage_perc", 0.8, "avg"),
}
# A wake-only trigger: its value wakes a model at zero replicas, and with this target it never
# asks for more than one replica (the engine's own metric scales beyond).
WAKE_ONLY_TARGET = "1000000"


@dataclass(frozen=True)
class AutoscalerPlan:
    """The autoscaler to apply (None: none), and what the Autoscaling condition says."""

    manifest: dict[str, Any] | None
    verdict: Verdict


def held_replicas(
    live: Mapping[str, Any] | None, status: Mapping[str, Any] | None = None
) -> int | None:
    """The replicas to keep applying to an autoscaled Deployment: those the operator applied and
    still owns (no one has changed them since), None once the field is someone else's.

    Server-side apply resets a field that its owner stops sending (a Deployment to 1 replica), so
    the operator sends the live value until the autoscaler (or `kubectl scale`) changes it, which
    moves the field to that manager; from then on leaving it out changes nothing. A Deployment
    applied before the annotation existed is ours while the model's status shows no autoscaler
    and the replicas it applied.
    """
    if live is None:
        return None
    current = (live.get("spec") or {}).get("replicas")
    applied = ((live.get("metadata") or {}).get("annotations") or {}).get(REPLICAS_ANNOTATION)
    if applied is None and status is not None and not status.get("autoscaler"):
        applied = status.get("replicas")
    if current is None or applied is None or str(applied) != str(current):
        return None
    return int(current)


def target_of(spec: AutoscalingSpec) -> float:
    """The target value per replica: the spec's, or the metric's default."""
    return spec.target if spec.target is not None else ENGINE_METRICS[spec.metric][1]


def engine_query(model: TritonVLLMModel, spec: AutoscalingSpec) -> str:
    """PromQL of the model's engine load over its pods, as a Kubernetes pod scrape labels them.

    vLLM's own /metrics on the OpenAI port labels the series with model_name; Triton's metrics
    port (the backend's copies under the official names) with model.
    """
    if spec.query:
        return spec.query
    name, _, combine = ENGINE_METRICS[spec.metric]
    label = "model_name" if model.spec.openai.enabled else "model"
    selector = f'namespace="{model.metadata.namespace}",{label}="{model.served_name}"'
    return f"{combine}({name}{{{selector}}})"


def quantity(value: float) -> str:
    """A Kubernetes quantity for a target: "2", "800m"."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def scale_target(model: TritonVLLMModel) -> dict[str, str]:
    """What the autoscaler scales: the Deployment, or the model itself when its replicas are
    groups of nodes."""
    if scales_groups(model.spec):
        return {"apiVersion": API_VERSION, "kind": KIND, "name": model.metadata.name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.metadata.name}


def _scale_down(spec: AutoscalingSpec) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": spec.scale_down_stabilization_seconds}}


def render_scaled_object(
    model: TritonVLLMModel, spec: AutoscalingSpec, prometheus: str
) -> dict[str, Any]:
    """A KEDA ScaledObject for the model's Deployment (or its groups)."""
    name = model.metadata.name
    metric_type = "Value" if spec.metric == "KVCacheUsage" and not spec.query else "AverageValue"
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "engine",
            "metricType": metric_type,
            "metadata": {
                "serverAddress": prometheus,
                "query": engine_query(model, spec),
                "threshold": f"{target_of(spec):g}",
                # Replicas that are starting have no series yet: none is no load, not an error.
                "ignoreNullValues": "true",
            },
        }
    ]
    spec_out: dict[str, Any] = {
        "scaleTargetRef": scale_target(model),
        "pollingInterval": spec.polling_seconds,
        "minReplicaCount": spec.min_replicas,
        "maxReplicaCount": spec.max_replicas,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _scale_down(spec)}},
        "triggers": triggers,
    }
    wake = spec.scale_to_zero
    if wake is not None:
        triggers.append(
            {
                "type": "prometheus",
                "name": "activation",
                "metricType": "Value",
                "metadata": {
                    "serverAddress": prometheus,
                    "query": wake.activation_query,
                    "threshold": WAKE_ONLY_TARGET,
                    "activationThreshold": f"{wake.activation_threshold:g}",
                    "ignoreNullValues": "true",
                },
            }
        )
        # cooldownPeriod covers only the last step (1 -> 0); initialCooldownPeriod keeps a new
        # model up that long before it may go to zero (it has had no chance to be called yet).
        spec_out["cooldownPeriod"] = wake.idle_seconds
        spec_out["initialCooldownPeriod"] = wake.idle_seconds
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(model, name),
        "spec": spec_out,
    }


def render_hpa(model: TritonVLLMModel, spec: AutoscalingSpec) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler on the engine's Pods metric (never below 1)."""
    name = model.metadata.name
    metric = ENGINE_METRICS[spec.metric][0]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(model, name),
        "spec": {
            "scaleTargetRef": scale_target(model),
            "minReplicas": max(spec.min_replicas, 1),
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": quantity(target_of(spec)),
                        },
                    },
                }
            ],
            "behavior": _scale_down(spec),
        },
    }


def _live_condition(
    live: Mapping[tuple[str, str], Mapping[str, Any]], manifest: dict[str, Any], type_: str
) -> Mapping[str, Any]:
    """A condition of the live object `manifest` renders, as its controller reports it."""
    obj = live.get((manifest["kind"], manifest["metadata"]["name"])) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def plan_autoscaler(
    model: TritonVLLMModel,
    keda_served: bool,
    default_prometheus: str | None,
    live: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> AutoscalerPlan | None:
    """Which autoscaler the model gets and why; None when spec.autoscaling is unset.

    `live`: the model's children by (kind, name) as the API shows them; the autoscaler's own
    conditions (KEDA's Ready, the HPA's ScalingActive) say whether it can read its metrics.
    """
    live = live or {}
    spec = model.spec.autoscaling
    if spec is None:
        return None
    bounds = f"{spec.min_replicas}-{spec.max_replicas} replicas"
    if scales_groups(model.spec):
        bounds += (
            f" (groups of {model.spec.nodes_per_replica} nodes, through the model's scale "
            "subresource)"
        )
    use_keda = spec.provider == "KEDA" or (spec.provider == "Auto" and keda_served)
    if use_keda:
        if not keda_served:
            return AutoscalerPlan(
                None,
                Verdict(
                    AUTOSCALING,
                    "False",
                    "KEDANotInstalled",
                    "autoscaling.provider is KEDA but KEDA's CRDs (scaledobjects.keda.sh) are "
                    "not served: install KEDA, or set provider Auto or HPA.",
                ),
            )
        prometheus = spec.prometheus_address or default_prometheus
        if not prometheus:
            return AutoscalerPlan(
                None,
                Verdict(
                    AUTOSCALING,
                    "False",
                    "PrometheusAddressUnknown",
                    "KEDA reads the engine's metrics from Prometheus: set "
                    "spec.autoscaling.prometheusAddress, or the operator's "
                    "TRITON_VLLM_PROMETHEUS_ADDRESS (chart value autoscaling.prometheusAddress).",
                ),
            )
        manifest = render_scaled_object(model, spec, prometheus)
        ready = _live_condition(live, manifest, "Ready")
        if ready.get("status") == "False":
            message = f"KEDA reports the ScaledObject not ready: {ready.get('message', '')}"
            return AutoscalerPlan(
                manifest, Verdict(AUTOSCALING, "False", "ScaledObjectNotReady", message)
            )
        wake = ""
        if spec.scale_to_zero is not None:
            wake = (
                f"; from zero when {spec.scale_to_zero.activation_query} > "
                f"{spec.scale_to_zero.activation_threshold:g}, to zero after "
                f"{spec.scale_to_zero.idle_seconds} s idle"
            )
        message = (
            f"KEDA ScaledObject {model.metadata.name} scales {bounds} on "
            f"{engine_query(model, spec)} (target {target_of(spec):g} per replica) from "
            f"{prometheus}{wake}."
        )
        return AutoscalerPlan(manifest, Verdict(AUTOSCALING, "True", "KEDA", message))
    why = "KEDA's CRDs are not served" if spec.provider == "Auto" else "autoscaling.provider is HPA"
    if spec.query:
        return AutoscalerPlan(
            None,
            Verdict(
                AUTOSCALING,
                "False",
                "QueryNeedsKEDA",
                f"{why}, and a HorizontalPodAutoscaler cannot scale on a PromQL "
                "autoscaling.query: install KEDA, or remove the query to scale on the engine's "
                "metric.",
            ),
        )
    manifest = render_hpa(model, spec)
    metric = ENGINE_METRICS[spec.metric][0]
    if spec.min_replicas == 0:
        return AutoscalerPlan(
            manifest,
            Verdict(
                AUTOSCALING,
                "False",
                "ScaleToZeroNeedsKEDA",
                f"{why}: the HorizontalPodAutoscaler keeps at least 1 replica; scaling to "
                "zero needs KEDA.",
            ),
        )
    active = _live_condition(live, manifest, "ScalingActive")
    if active.get("status") == "False":
        message = (
            f"The HorizontalPodAutoscaler cannot scale: {active.get('message', '')} (a "
            f"custom-metrics adapter must serve the Pods metric {metric})."
        )
        return AutoscalerPlan(
            manifest,
            Verdict(AUTOSCALING, "False", active.get("reason") or "ScalingInactive", message),
        )
    message = (
        f"{why}: HorizontalPodAutoscaler {model.metadata.name} scales {bounds} on the Pods "
        f"metric {metric} (target {target_of(spec):g} per replica), which a custom-metrics "
        "adapter (e.g. prometheus-adapter) must serve."
    )
    return AutoscalerPlan(
        manifest, Verdict(AUTOSCALING, "True", "HorizontalPodAutoscaler", message)
    )
