"""Status conditions (metav1.Condition shape) and the readiness of a model's Deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .render.manifests import CONFIG_HASH_ANNOTATION

ACCEPTED = "Accepted"
SCHEDULED = "Scheduled"
READY = "Ready"
MODEL_FACTS = "ModelFacts"  # whether the model's config.json and weights' size could be read
CACHED = "Cached"  # whether the prefetch Job has put the weights into the cache volume
AUTOSCALING = "Autoscaling"  # which autoscaler drives the replicas, and whether it can
LORA_ADAPTERS = "LoraAdapters"  # each LoRA adapter listed to the pods, or why one is not
CONDITION_TYPES = (ACCEPTED, SCHEDULED, READY, MODEL_FACTS, CACHED, AUTOSCALING, LORA_ADAPTERS)

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Verdict:
    """One condition's outcome before timestamps: status, reason and a message to act on."""

    type: str
    status: Status
    reason: str
    message: str


def set_condition(
    conditions: list[dict[str, Any]], verdict: Verdict, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Conditions with `verdict` applied; lastTransitionTime kept unless the status flips."""
    previous = next((c for c in conditions if c.get("type") == verdict.type), None)
    flipped = previous is None or previous.get("status") != verdict.status
    updated = {
        "type": verdict.type,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "lastTransitionTime": now if flipped else previous["lastTransitionTime"],  # type: ignore[index]
        "observedGeneration": generation,
    }
    others = [c for c in conditions if c.get("type") != verdict.type]
    order = {name: i for i, name in enumerate(CONDITION_TYPES)}
    return sorted([*others, updated], key=lambda c: order.get(c["type"], len(order)))


def spec_observed(workload: Mapping[str, Any]) -> bool:
    """Whether a workload's controller has seen its latest spec (what its status says is about
    that spec, not an earlier one)."""
    status = workload.get("status") or {}
    generation = (workload.get("metadata") or {}).get("generation")
    return generation is None or status.get("observedGeneration") == generation


def deployment_readiness(
    deployment: Mapping[str, Any] | None,
    replicas: int,
    config_hash: str,
    endpoint: str,
    applying: bool,
    zero_message: str = "spec.replicas is 0.",
    autoscaled_floor: int | None = None,
    serving_before: Verdict | None = None,
) -> tuple[Verdict, int, int]:
    """Ready from the live Deployment, for the config rendered now; also ready/updated counts.

    `autoscaled_floor`: the replicas are an autoscaler's, and the model serves once this many
    (its minimum, at least one) run this config: scaling out or in is not a rollout, and Ready
    does not flap with the load. `serving_before`: the model's Ready=True for this generation and
    config, kept while the Deployment controller catches up with a replica count the autoscaler
    set (nothing else changes the Deployment's spec while our template stands).

    True only when the Deployment runs the template rendered for this generation (its config
    hash), has observed its own latest spec, and every replica is updated, ready and available
    with no old pod left. `applying`: this pass is writing a new Deployment spec, so what the
    Deployment says now is about the previous one.
    """
    if deployment is None:
        return Verdict(READY, "False", "Deploying", "Waiting for the Deployment to appear."), 0, 0
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    template = (deployment.get("spec") or {}).get("template") or {}
    live_hash = ((template.get("metadata") or {}).get("annotations") or {}).get(
        CONFIG_HASH_ANNOTATION
    )
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    counts = f"{updated} of {replicas} replicas updated, {ready} ready"
    if applying or live_hash != config_hash:
        message = f"Applying the Deployment for this generation; {counts}."
        return Verdict(READY, "False", "RollingOut", message), ready, 0
    if not spec_observed(deployment):
        if autoscaled_floor is not None and serving_before is not None:
            return serving_before, ready, updated
        message = f"The Deployment controller has not seen the new spec yet; {counts}."
        return Verdict(READY, "False", "RollingOut", message), ready, updated
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        message = progressing.get("message", "the rollout exceeded its progress deadline")
        verdict = Verdict(READY, "False", "RolloutFailed", f"{message}; check the pods' events")
        return verdict, ready, updated
    if replicas == 0:
        return Verdict(READY, "False", "ScaledToZero", zero_message), ready, updated
    if autoscaled_floor is not None and total <= updated:
        # Every pod runs this config; the autoscaler is moving between counts.
        floor = min(max(autoscaled_floor, 1), replicas)
        if ready >= floor and available >= floor:
            if ready >= replicas and total == replicas:
                message = f"All {replicas} replicas serve the model at {endpoint}."
            else:
                message = (
                    f"{ready} of {replicas} replicas ready (the autoscaler is scaling); the "
                    f"model serves at {endpoint}."
                )
            return Verdict(READY, "True", "ModelServing", message), ready, updated
    if updated < replicas or total > replicas:
        old = max(total - updated, 0)
        message = f"Rolling out: {counts}, {old} old pod(s) still running."
        return Verdict(READY, "False", "RollingOut", message), ready, updated
    if ready < replicas or available < replicas:
        message = (
            f"{ready} of {replicas} replicas ready; tritonserver is starting or pods are "
            "Pending (kubectl describe pods -l app.kubernetes.io/instance=<name>)."
        )
        return Verdict(READY, "False", "PodsNotReady", message), ready, updated
    message = f"All {replicas} replicas serve the model at {endpoint}."
    return Verdict(READY, "True", "ModelServing", message), ready, updated


# Reasons that mean the user (or the cluster's owner) has to act: posted as Warning Events.
WARNING_REASONS = {
    "InvalidSpec",
    "InvalidName",
    "InvalidEngineArgs",
    "InvalidTritonConfig",
    "RejectedByAPIServer",
    "AdmissionDenied",
    "NameConflict",
    "NoNodeFits",
    "NoGPUNodes",
    "Unschedulable",
    "FailedCreate",
    "RolloutFailed",
    "APIError",
    # The model's facts: a lookup that failed, or a spec they show cannot run.
    "HubTokenRequired",
    "HubEndpointNotAllowed",
    "HubAccessDenied",
    "ModelNotFound",
    "ModelConfigMissing",
    "ModelConfigInvalid",
    "ModelConfigUnsupported",
    "HubUnreachable",
    "ModelCacheUnusable",
    "WeightsUnreadable",
    "TokenSecretNotFound",
    "TokenSecretForbidden",
    "TokenSecretKeyMissing",
    "TokenSecretInvalid",
    "TokenSecretUnreadable",
    "ModelSizeUnknown",
    "TensorParallelSizeInvalid",
    "TensorParallelSizeBelowEstimate",
    "NotEnoughGPUs",
    "InsufficientGPUMemory",
    "MaxModelLenTooLong",
    "MaxModelLenAboveModel",
    "MaxModelLenUnknown",
    "ModelTooLarge",
    # The prefetch Job's failures (Cached=False).
    "DownloadFailed",
    "DiskFull",
    "PrefetchNeedsClaim",
    "PrefetchNeedsRepo",
    # LoRA adapters refused (LoraAdapters=False).
    "AdapterRefused",
    # The autoscaler cannot work as the spec asks (Autoscaling=False).
    "KEDANotInstalled",
    "PrometheusAddressUnknown",
    "ScaledObjectNotReady",
    "QueryNeedsKEDA",
    "ScaleToZeroNeedsKEDA",
    "FailedGetPodsMetric",
    "ScalingInactive",
}
