"""One reconcile pass, pure: (model object, observed world) -> writes, deletes, status, events.

Level-based: every pass renders what the model should have and compares it with what the watches
observed. The steps read top to bottom in `plan_reconcile`:

1. parse and validate the spec, once;
2-4. facts -> placement -> every desired child (`desired.desire`, also all of `render`);
5. the diff against the live children: what to write, what to delete;
6. readiness, as small pure checks (`readiness`);
7. the status, dumped once, with an Event for each condition that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import TritonVLLMModel, fixed_replicas, group_count, replica_nodes, scales_groups
from .children import APPLIED_HASH_ANNOTATION, needs_apply, unwanted
from .conditions import (
    ACCEPTED,
    READY,
    SCHEDULED,
    WARNING_REASONS,
    Verdict,
    deployment_readiness,
    set_condition,
)
from .desired import Desired, desire
from .downloads import downloading, progress_job
from .group_restart import lost_members, restarting, scaled_to_zero
from .lora import adapter_events
from .model_facts import ModelFactsError
from .observed import Key, Observed, OwnPod
from .placement import FactsQuery, Unplaceable, facts_query, sticky
from .readiness import (
    caching,
    group_readiness,
    one_group_at_a_time,
    ranks,
    scheduled,
    serving_before,
    unplaced,
)
from .render.manifests import endpoint, endpoints, serving_labels
from .settings import Settings
from .validation import SpecError, check_model, check_token_endpoint, parse_model

__all__ = [
    "APPLIED_HASH_ANNOTATION",
    "Key",
    "Observed",
    "OwnPod",
    "Plan",
    "api_failure",
    "needs_facts",
    "plan_reconcile",
    "progress_pod",
    "refused",
    "status_changed",
]

STATUS_FIELDS = (
    "tensorParallelSize",
    "nodesPerReplica",
    "ranks",
    "replicas",
    "currentReplicas",
    "selector",
    "autoscaler",
    "readyReplicas",
    "updatedReplicas",
    "endpoint",
    "endpoints",
    "configHash",
    "configMap",
    "model",
    "lora",
)


@dataclass
class Plan:
    """What this pass should do."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Key] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    # Look at the model again after this many seconds: only while a download runs.
    recheck_after: float | None = None
    # spec.replicas to set through the model's scale subresource: an autoscaled multi-node model
    # starts without one, and the subresource (the autoscaler's way in) needs the field.
    initial_replicas: int | None = None


@dataclass
class Outcome:
    """Conditions, status fields and stale condition types that steps 2-6 found."""

    verdicts: list[Verdict]
    fields: dict[str, Any] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)


def plan_reconcile(
    body: Mapping[str, Any], observed: Observed, settings: Settings, now: str
) -> Plan:
    """Everything one pass decides; the caller applies, deletes, writes status if changed."""
    plan = Plan()
    # 1. Parse and validate, once.
    try:
        model = parse_model(dict(body))
        check_model(model, settings.backend_name)
    except SpecError as err:
        outcome = Outcome(_not_accepted(err))
    else:
        # 2-4. Facts, placement, every desired child.
        wanted = desire(model, observed, settings, dict(body.get("status") or {}))
        plan.events += wanted.events
        plan.recheck_after = wanted.recheck_after
        # 5-6. The diff against the live children, and readiness.
        outcome = _converge(body, model, observed, wanted, plan)
    # 7. The status, dumped once.
    return _with_status(body, plan, outcome, now)


def _not_accepted(err: SpecError) -> list[Verdict]:
    return [
        Verdict(ACCEPTED, "False", err.reason, err.message),
        Verdict(SCHEDULED, "Unknown", "NotAccepted", "The spec must be fixed first."),
        Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
    ]


def _converge(
    body: Mapping[str, Any],
    model: TritonVLLMModel,
    observed: Observed,
    wanted: Desired,
    plan: Plan,
) -> Outcome:
    name = model.metadata.name
    if wanted.refusal is not None or wanted.placed is None:
        verdicts = _not_accepted(wanted.refusal or SpecError("InvalidSpec", "not placed"))
        return Outcome([*verdicts, *wanted.verdicts], wanted.status, wanted.stale)
    accepted = Verdict(ACCEPTED, "True", "Valid", "The spec is valid.")
    model = wanted.model or model
    shape = _shape_change(model, observed)
    if shape is not None:
        return Outcome(_not_accepted(shape), wanted.status, wanted.stale)
    placement = wanted.placement
    live = observed.children.get(("Deployment", name))
    if placement is None:
        # Nothing to run yet: only the download Jobs, which start as soon as the spec is valid.
        plan.apply += [m for m in wanted.children if needs_apply(m, _live(observed, m))]
        fresh = wanted.placed.fresh
        assert isinstance(fresh, Unplaceable)
        facts = observed.facts
        unsized = fresh.reason == "ModelSizeUnknown" or (
            isinstance(facts, ModelFactsError) and fresh.reason == facts.reason
        )
        fields = {"replicas": fixed_replicas(model.spec), **wanted.status}
        return Outcome(
            [accepted, *unplaced(fresh, unsized), *wanted.verdicts], fields, wanted.stale
        )
    # 5. The diff. The Deployment (and what serves or guards it) waits for the weights unless it
    # already runs.
    withheld = {"Deployment", "PodDisruptionBudget", "ScaledObject", "HorizontalPodAutoscaler"}
    waiting = wanted.waits_for_weights and live is None
    for manifest in wanted.children:
        if waiting and manifest["kind"] in withheld:
            continue
        made = (manifest["kind"], manifest["metadata"]["name"]) in observed.server_made
        if needs_apply(manifest, _live(observed, manifest), made):
            plan.apply.append(manifest)
    if scales_groups(model.spec) and model.spec.replicas is None:
        plan.initial_replicas = group_count(model.spec)
    nodes = replica_nodes(model.spec)
    if nodes > 1:
        plan.apply = one_group_at_a_time(plan.apply, observed, nodes)
        _restart_broken_groups(body, observed, wanted, plan, nodes)
    warning = placement.warning
    if warning and any(m["kind"] in ("Deployment", "StatefulSet") for m in plan.apply):
        # Said once per new pod template: an explicit size the estimate disagrees with.
        plan.events.append(("Warning", warning.reason, warning.message))
    plan.delete += unwanted(model, observed, wanted.children)
    # 6. Readiness.
    tp = placement.tensor_parallel_size
    config_hash = wanted.config_hash
    assert config_hash is not None
    url = endpoint(model)
    applying = any(m["kind"] in ("Deployment", "StatefulSet") for m in plan.apply)
    if replica_nodes(model.spec) > 1:
        return _converge_groups(model, observed, wanted, accepted, config_hash, applying)
    desired = fixed_replicas(model.spec)
    zero = "spec.replicas is 0."
    if desired is None:
        # The autoscaler's choice, on the live Deployment (1 until it chooses).
        desired = int(((live or {}).get("spec") or {}).get("replicas", 1))
        zero = "Scaled to zero by the autoscaler; the activation query wakes it."
    floor = model.spec.autoscaling.min_replicas if model.spec.autoscaling else None
    serving = serving_before(body, config_hash)
    ready, ready_replicas, updated = deployment_readiness(
        live, desired, config_hash, url, applying, zero, floor, serving
    )
    if waiting and wanted.cached is not None:
        ready = caching(wanted.cached)
    configmap = next(m for m in wanted.children if m["kind"] == "ConfigMap")
    fields = {
        "tensorParallelSize": tp,
        "nodesPerReplica": 1,
        "replicas": desired,
        "currentReplicas": int(((live or {}).get("status") or {}).get("replicas") or 0),
        "selector": _selector(model),
        "autoscaler": _autoscaler(wanted),
        "readyReplicas": ready_replicas,
        "updatedReplicas": updated,
        "endpoint": url,
        "endpoints": endpoints(model),
        "configHash": config_hash,
        "configMap": configmap["metadata"]["name"],
        **wanted.status,
    }
    verdicts = [
        accepted,
        scheduled(wanted.placed, observed, config_hash, tp, live),
        ready,
        *wanted.verdicts,
    ]
    return Outcome(verdicts, fields, wanted.stale)


def _selector(model: TritonVLLMModel) -> str:
    """status.selector (the scale subresource's): the pods that serve, whose metrics an
    autoscaler averages."""
    return ",".join(f"{k}={v}" for k, v in sorted(serving_labels(model).items()))


def _autoscaler(wanted: Desired) -> str | None:
    scaler = wanted.scaler.manifest if wanted.scaler else None
    return f"{scaler['kind']}/{scaler['metadata']['name']}" if scaler else None


def _converge_groups(
    model: TritonVLLMModel,
    observed: Observed,
    wanted: Desired,
    accepted: Verdict,
    config_hash: str,
    applying: bool,
) -> Outcome:
    """Readiness and status of a model whose replicas are groups of nodes."""
    assert wanted.placed is not None and wanted.placement is not None
    nodes = replica_nodes(model.spec)
    names = [m["metadata"]["name"] for m in wanted.children if m["kind"] == "StatefulSet"]
    live = {name: observed.children.get(("StatefulSet", name)) for name in names}
    url = endpoint(model)
    floor = model.spec.autoscaling.min_replicas if model.spec.autoscaling else None
    ready, whole, updated = group_readiness(live, nodes, config_hash, url, applying, floor)
    members = ranks(observed)
    at_zero = [n for n, sts in live.items() if sts and (sts.get("spec") or {}).get("replicas") == 0]
    if at_zero and ready.status == "False":
        ready = Verdict(
            READY,
            "False",
            "GroupRestarting",
            f"Restarting {', '.join(at_zero)} whole: a member was lost (the GroupRestarted Event "
            f"names it); its ranks start again together once its pods are gone. {ready.message}",
        )
    missing = [r for r in members if not r["ready"]]
    if ready.status == "False" and missing:
        # Name what breaks a group: which rank, of which group, on which node.
        named = "; ".join(
            f"{r['group']} rank {r['rank']} ({r['pod']}) on {r['node'] or 'no node yet'}"
            for r in missing[:5]
        )
        ready = Verdict(READY, "False", ready.reason, f"{ready.message} Not ready: {named}.")
    tp = wanted.placement.tensor_parallel_size
    configmap = next(m for m in wanted.children if m["kind"] == "ConfigMap")
    fields = {
        "tensorParallelSize": tp,
        "nodesPerReplica": nodes,
        "ranks": members,
        "replicas": len(names),
        "currentReplicas": sum(1 for sts in live.values() if sts is not None),
        "selector": _selector(model),
        "autoscaler": _autoscaler(wanted),
        "readyReplicas": whole,
        "updatedReplicas": updated,
        "endpoint": url,
        "endpoints": endpoints(model),
        "configHash": config_hash,
        "configMap": configmap["metadata"]["name"],
        **wanted.status,
    }
    scheduled_verdict = scheduled(wanted.placed, observed, config_hash, tp, None)
    return Outcome([accepted, scheduled_verdict, ready, *wanted.verdicts], fields, wanted.stale)


def _restart_broken_groups(
    body: Mapping[str, Any], observed: Observed, wanted: Desired, plan: Plan, nodes: int
) -> None:
    """A group that lost a member is restarted whole: scaled to 0 (with an Event naming the
    member), kept there until its pods are gone, then back to its ranks."""
    groups = {m["metadata"]["name"]: m for m in wanted.children if m["kind"] == "StatefulSet"}
    previous = (body.get("status") or {}).get("ranks") or []
    held: dict[str, dict[str, Any] | None] = {
        name: None for name in groups if restarting(observed.children.get(("StatefulSet", name)))
    }
    for lost in lost_members(previous, observed.own_pods, nodes):
        if lost.group in groups and lost.group not in held:
            held[lost.group] = scaled_to_zero(groups[lost.group])
            plan.events.append(("Warning", "GroupRestarted", lost.message()))
    if not held:
        return
    plan.apply = [
        m for m in plan.apply if not (m["kind"] == "StatefulSet" and m["metadata"]["name"] in held)
    ]
    plan.apply += [m for m in held.values() if m is not None]


def _shape_change(model: TritonVLLMModel, observed: Observed) -> SpecError | None:
    """spec.nodesPerReplica moved across 1 on a running model: one node a replica is a
    Deployment, several are groups; the operator does not delete a Deployment (its RBAC has no
    such right), so the move is refused with what to do."""
    groups = any(kind == "StatefulSet" for kind, _ in observed.children)
    single = ("Deployment", model.metadata.name) in observed.children
    multi = replica_nodes(model.spec) > 1
    if (multi and single) or (not multi and groups):
        nodes = replica_nodes(model.spec)
        return SpecError(
            "InvalidSpec",
            f"{model.metadata.name}: a replica now spans {nodes} node(s), and the number of "
            "nodes a replica spans cannot move between 1 and more on a running model (its pods "
            "are a Deployment at 1, groups of nodes above). Set spec.nodesPerReplica (and what "
            "placement reads) back, or delete the model and create it again.",
        )
    return None


def _live(observed: Observed, manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return observed.children.get((manifest["kind"], manifest["metadata"]["name"]))


def _with_status(body: Mapping[str, Any], plan: Plan, outcome: Outcome, now: str) -> Plan:
    old_status = dict(body.get("status") or {})
    old_status["conditions"] = [
        c for c in old_status.get("conditions") or [] if c.get("type") not in outcome.stale
    ]
    conditions, events = _with_conditions(body, outcome.verdicts, old_status, now)
    old_lora = old_status.get("lora")
    if outcome.fields.get("lora") is not None or old_lora:
        events += adapter_events(old_lora, outcome.fields.get("lora"))
    plan.events = plan.events + events
    plan.status = {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "conditions": conditions,
        **dict.fromkeys(STATUS_FIELDS),
        **outcome.fields,
    }
    return plan


def _with_conditions(
    body: Mapping[str, Any], verdicts: list[Verdict], base: Mapping[str, Any], now: str
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Conditions with the verdicts applied, and an Event for each one that changed."""
    generation = (body.get("metadata") or {}).get("generation")
    conditions = list(base.get("conditions") or [])
    old = list((body.get("status") or {}).get("conditions") or [])
    previous = {c.get("type"): (c.get("status"), c.get("reason")) for c in old}
    events = []
    for verdict in verdicts:
        conditions = set_condition(conditions, verdict, generation, now)
        if previous.get(verdict.type) != (verdict.status, verdict.reason):
            kind = "Warning" if verdict.reason in WARNING_REASONS else "Normal"
            events.append((kind, verdict.reason, f"{verdict.type}: {verdict.message}"))
    return conditions, events


# What the runtime asks before and after a pass.


def needs_facts(
    body: Mapping[str, Any], observed: Observed, settings: Settings
) -> FactsQuery | None:
    """The facts lookup the next pass needs: for a Hub model that must be placed afresh."""
    if not settings.model_facts:
        return None
    try:
        model = parse_model(dict(body))
    except SpecError:
        return None
    query = facts_query(model.spec, settings)
    if query is None or sticky(model, observed.children.get(("Deployment", model.metadata.name))):
        return None
    try:
        check_model(model, settings.backend_name)
        check_token_endpoint(model, settings.hf_token_endpoints, settings.hf_endpoint)
    except SpecError:
        return None  # refused before any facts would be used (or a token sent)
    return query


def progress_pod(body: Mapping[str, Any], observed: Observed, settings: Settings) -> str | None:
    """The pod whose log tail a pass reads for the download's progress; None when none runs."""
    try:
        model = parse_model(dict(body))
    except SpecError:
        return None
    job = progress_job(model, observed, settings)
    return None if job is None else downloading(observed, job, settings)


def refused(body: Mapping[str, Any], planned: Plan, reason: str, message: str, now: str) -> Plan:
    """The API server refused a child, or its name is taken: the spec (or the cluster) must change.

    Keeps what `planned` found about placement; Accepted (or Ready, for a name conflict) and
    Ready say what went wrong. Deterministic, so a repeated refusal writes nothing.
    """
    if reason == "NameConflict":
        verdicts = [Verdict(READY, "False", reason, message)]
    else:
        verdicts = [
            Verdict(ACCEPTED, "False", reason, message),
            Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
        ]
    return _overridden(body, planned, verdicts, now)


def _overridden(body: Mapping[str, Any], planned: Plan, verdicts: list[Verdict], now: str) -> Plan:
    """`planned` with some of its conditions replaced; its other events kept."""
    plan = Plan(status=dict(planned.status))
    # Transition times of the replaced conditions continue from the model's own status.
    types = {v.type for v in verdicts}
    old = (body.get("status") or {}).get("conditions") or []
    base = [c for c in planned.status["conditions"] if c.get("type") not in types]
    base += [c for c in old if c.get("type") in types]
    conditions, events = _with_conditions(body, verdicts, {"conditions": base}, now)
    plan.status["conditions"] = conditions
    replaced = {f"{v.type}:" for v in verdicts}
    kept = [e for e in planned.events if not any(e[2].startswith(r) for r in replaced)]
    plan.events = kept + events
    return plan


def api_failure(body: Mapping[str, Any], planned: Plan, message: str, now: str) -> Plan:
    """The API server failed a write (not the spec's fault): said in Ready, and retried."""
    return _overridden(
        body, planned, [Verdict(READY, "False", "APIError", f"{message}; retrying.")], now
    )


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (None fields are absent ones)."""
    old_clean = {k: v for k, v in dict(old or {}).items() if v is not None}
    new_clean = {k: v for k, v in new.items() if v is not None}
    return old_clean != new_clean
