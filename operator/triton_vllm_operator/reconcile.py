"""One reconcile pass, pure: (model object, observed world) -> children to apply, status, events.

The handlers feed it what the informers observed and carry out what it returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .conditions import ACCEPTED, READY, SCHEDULED, Verdict, deployment_readiness, set_condition
from .placement import Placement, Unplaceable, inventory, place
from .render.manifests import CONFIG_HASH_ANNOTATION, endpoint, render_all
from .settings import Settings
from .validation import SpecError, check_model, parse_model

APPLIED_HASH_ANNOTATION = "tritonvllm.io/applied-hash"
# Reasons that mean the user (or the cluster's owner) has to act: posted as Warning Events.
WARNING_REASONS = {
    "InvalidSpec",
    "InvalidEngineArgs",
    "InvalidTritonConfig",
    "RejectedByAPIServer",
    "NoNodeFits",
    "NoGPUNodes",
    "RolloutFailed",
}


@dataclass(frozen=True)
class Observed:
    """What the informers saw: nodes, pods holding GPUs, and the model's children."""

    nodes: Iterable[Mapping[str, Any]]
    pods: Iterable[Mapping[str, Any]]
    child_hashes: Mapping[tuple[str, str], str | None]  # (kind, name) -> applied hash
    deployment: dict[str, Any] | None


@dataclass
class Plan:
    """What this pass should do."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """Digest of a rendered child; equal digests mean applying again would change nothing."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[APPLIED_HASH_ANNOTATION] = applied_hash(manifest)
    return manifest


def _own_pod(pod: Mapping[str, Any], namespace: str, name: str) -> bool:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    return meta.get("namespace") == namespace and labels.get("tritonvllm.io/model") == name


def _verdicts(
    body: Mapping[str, Any], observed: Observed, settings: Settings, plan: Plan
) -> tuple[list[Verdict], dict[str, Any]]:
    """The three conditions and the resolved status fields; fills plan.apply on the way."""
    try:
        model = parse_model(dict(body))
        check_model(model, settings.backend_name)
    except SpecError as err:
        return [
            Verdict(ACCEPTED, "False", err.reason, err.message),
            Verdict(SCHEDULED, "Unknown", "NotAccepted", "The spec must be fixed first."),
            Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
        ], {}
    accepted = Verdict(ACCEPTED, "True", "Valid", "The spec is valid.")
    meta = model.metadata
    pods = [p for p in observed.pods if not _own_pod(p, meta.namespace, meta.name)]
    placement: Placement | Unplaceable = place(
        model.spec, inventory(model.spec, observed.nodes, pods)
    )
    if isinstance(placement, Unplaceable):
        return [
            accepted,
            Verdict(SCHEDULED, "False", placement.reason, placement.message),
            Verdict(READY, "False", "Unschedulable", "No GPU placement; see Scheduled."),
        ], {"replicas": model.spec.replicas}
    message = placement.message
    if placement.replicas_that_fit_now < model.spec.replicas:
        message += (
            f"; free GPUs for {placement.replicas_that_fit_now} of {model.spec.replicas} "
            "replicas now, the rest wait for GPUs to free up"
        )
    scheduled = Verdict(SCHEDULED, "True", "Placed", message)
    children = render_all(model, placement, settings)
    pod_annotations = children[1]["spec"]["template"]["metadata"]["annotations"]
    for manifest in children:
        manifest = with_applied_hash(manifest)
        key = (manifest["kind"], manifest["metadata"]["name"])
        if (
            observed.child_hashes.get(key)
            != manifest["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        ):
            plan.apply.append(manifest)
    url = endpoint(model)
    ready, ready_replicas = deployment_readiness(observed.deployment, model.spec.replicas, url)
    tp = placement.tensor_parallel_size
    resolved = {
        "tensorParallelSize": tp,
        "replicas": model.spec.replicas,
        "readyReplicas": ready_replicas,
        "endpoint": url,
        "configHash": pod_annotations[CONFIG_HASH_ANNOTATION],
    }
    return [accepted, scheduled, ready], resolved


def plan_reconcile(
    body: Mapping[str, Any], observed: Observed, settings: Settings, now: str
) -> Plan:
    """Everything one pass decides; the caller applies, writes status if changed, posts events."""
    plan = Plan()
    verdicts, resolved = _verdicts(body, observed, settings, plan)
    old_status = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    conditions = list(old_status.get("conditions") or [])
    previous = {c.get("type"): (c.get("status"), c.get("reason")) for c in conditions}
    for verdict in verdicts:
        conditions = set_condition(conditions, verdict, generation, now)
        if previous.get(verdict.type) != (verdict.status, verdict.reason):
            kind = "Warning" if verdict.reason in WARNING_REASONS else "Normal"
            plan.events.append((kind, verdict.reason, f"{verdict.type}: {verdict.message}"))
    plan.status = {
        "observedGeneration": generation,
        "conditions": conditions,
        "tensorParallelSize": None,
        "replicas": None,
        "readyReplicas": None,
        "endpoint": None,
        "configHash": None,
        **resolved,
    }
    return plan


def rejected_by_api_server(body: Mapping[str, Any], planned: Plan, message: str, now: str) -> Plan:
    """The API server refused a child (e.g. a toleration it finds invalid): the spec must change.

    Keeps what `planned` found about placement; Accepted and Ready say what went wrong.
    """
    plan = Plan(status=dict(planned.status))
    generation = body.get("metadata", {}).get("generation")
    old = list((body.get("status") or {}).get("conditions") or [])
    previous = {c.get("type"): (c.get("status"), c.get("reason")) for c in old}
    conditions = list(planned.status["conditions"])
    for verdict in (
        Verdict(ACCEPTED, "False", "RejectedByAPIServer", message),
        Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
    ):
        conditions = set_condition(conditions, verdict, generation, now)
        if previous.get(verdict.type) != (verdict.status, verdict.reason):
            kind = "Warning" if verdict.reason in WARNING_REASONS else "Normal"
            plan.events.append((kind, verdict.reason, f"{verdict.type}: {verdict.message}"))
    plan.status["conditions"] = conditions
    return plan


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (None fields are absent ones)."""
    old_clean = {k: v for k, v in dict(old or {}).items() if v is not None}
    new_clean = {k: v for k, v in new.items() if v is not None}
    return old_clean != new_clean
