"""Status conditions (metav1.Condition shape) and the readiness of a model's Deployment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ACCEPTED = "Accepted"
SCHEDULED = "Scheduled"
READY = "Ready"
CONDITION_TYPES = (ACCEPTED, SCHEDULED, READY)

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


def deployment_readiness(
    deployment: dict[str, Any] | None, replicas: int, endpoint: str
) -> tuple[Verdict, int]:
    """Ready from the Deployment's own status and conditions; also the ready replica count."""
    if deployment is None:
        return Verdict(READY, "False", "Deploying", "Waiting for the Deployment to appear."), 0
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    generation = deployment.get("metadata", {}).get("generation")
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        message = progressing.get("message", "the rollout exceeded its progress deadline")
        return Verdict(READY, "False", "RolloutFailed", f"{message}; check the pods' events"), ready
    if replicas == 0:
        return Verdict(READY, "False", "ScaledToZero", "spec.replicas is 0."), ready
    if generation is not None and status.get("observedGeneration") != generation:
        return Verdict(READY, "False", "RollingOut", "The Deployment is being updated."), ready
    if updated < replicas:
        message = f"{updated} of {replicas} pods run the current config; rolling out."
        return Verdict(READY, "False", "RollingOut", message), ready
    if ready < replicas or available < replicas:
        message = (
            f"{ready} of {replicas} replicas ready; tritonserver is starting or pods are "
            "Pending (kubectl describe pods -l app.kubernetes.io/instance=<name>)."
        )
        return Verdict(READY, "False", "PodsNotReady", message), ready
    message = f"All {replicas} replicas serve the model at {endpoint}."
    return Verdict(READY, "True", "ModelServing", message), ready
