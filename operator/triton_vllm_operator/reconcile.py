"""One reconcile pass, pure: (model object, observed world) -> writes, deletes, status, events.

Level-based: every pass compares the children it would render with the live ones and the
readiness the live Deployment shows; the handlers feed it what the watches observed and carry
out what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .api import TritonVLLMModel, fixed_replicas, most_replicas
from .conditions import (
    ACCEPTED,
    AUTOSCALING,
    CACHED,
    LORA_ADAPTERS,
    MODEL_FACTS,
    READY,
    SCHEDULED,
    Verdict,
    deployment_readiness,
    set_condition,
)
from .drift import covers
from .lora import adapter_events, plan_lora
from .model_facts import ModelFacts, ModelFactsError, status_of
from .placement import (
    Placement,
    Unplaceable,
    free_replica_slots,
    inventory,
)
from .placing import Placed, facts_verdict, place_model, sticky
from .prefetch_status import cached_verdict
from .render.autoscaling import held_replicas, plan_autoscaler
from .render.lora import adapter_job_name
from .render.manifests import (
    CONFIG_HASH_ANNOTATION,
    MODEL_LABEL,
    TEMPLATE_HASH_ANNOTATION,
    digest,
    endpoint,
    endpoints,
    render_all,
    rollout_strategy,
    selector_labels,
    with_replicas,
)
from .render.prefetch import PROGRESS_SECONDS, prefetch_job_name, render_prefetch_job
from .settings import Settings
from .sized_placement import (
    FactsQuery,
    facts_query,
)
from .validation import SpecError, check_model, parse_model

APPLIED_HASH_ANNOTATION = "tritonvllm.io/applied-hash"
# Reasons that mean the user (or the cluster's owner) has to act: posted as Warning Events.
WARNING_REASONS = {
    "InvalidSpec",
    "InvalidName",
    "InvalidEngineArgs",
    "InvalidTritonConfig",
    "RejectedByAPIServer",
    "NameConflict",
    "NoNodeFits",
    "NoGPUNodes",
    "Unschedulable",
    "FailedCreate",
    "RolloutFailed",
    "APIError",
    # The model's facts: a lookup that failed, or a spec they show cannot run.
    "HubTokenRequired",
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
Key = tuple[str, str]  # (kind, name) of a child


@dataclass(frozen=True)
class OwnPod:
    """One of the model's pods, as far as status and config clean-up care."""

    name: str
    config_hash: str | None
    config_map: str | None
    scheduled: tuple[str, str, str] | None = None  # PodScheduled (status, reason, message)
    terminating: bool = False
    job: str | None = None  # the prefetch Job of a download pod
    phase: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the watches saw: nodes, other pods holding GPUs, the model's pods and children."""

    nodes: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]  # bound pods of everything else, holding GPUs
    own_pods: Sequence[OwnPod] = ()
    own_gpu_pods: Sequence[Mapping[str, Any]] = ()  # this model's bound pods, holding GPUs
    children: Mapping[Key, Mapping[str, Any]] = field(default_factory=dict)
    # The model's facts as looked up for this pass, or why they could not be; None when no
    # lookup was made (a path model, lookups off, or a placement kept from the live Deployment).
    facts: ModelFacts | ModelFactsError | None = None
    # Pods of the model's prefetch Jobs, ended ones too (the pod watch leaves those out), listed
    # for a pass once a Job has failed or completed attempts: their termination messages say why
    # one failed, or what the completed one downloaded.
    prefetch_pods: Sequence[Mapping[str, Any]] = ()
    # The last lines of the log of the running prefetch pod (`progress_pod`), when read.
    prefetch_log: str | None = None
    # Whether the cluster serves KEDA's ScaledObject kind (its CRD is established).
    keda_served: bool = False


@dataclass
class Plan:
    """What this pass should do."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Key] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    # Look at the model again after this many seconds: only while a download runs.
    recheck_after: float | None = None


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """Digest of a rendered child; an equal digest on the live object means we rendered it."""
    return digest(manifest)


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations.pop(APPLIED_HASH_ANNOTATION, None)
    annotations[APPLIED_HASH_ANNOTATION] = applied_hash(manifest)
    return manifest


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Missing, rendered from another spec, or edited by hand since we applied it."""
    if live is None:
        return True
    rendered = _annotations(desired).get(APPLIED_HASH_ANNOTATION)
    return _annotations(live).get(APPLIED_HASH_ANNOTATION) != rendered or not covers(live, desired)


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
    except SpecError:
        return None  # refused before any facts would be used
    return query


def _finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _downloading(observed: Observed, job_name: str, settings: Settings) -> str | None:
    """The running pod of the model's unfinished prefetch Job, if progress is read at all."""
    job = observed.children.get(("Job", job_name))
    if not settings.prefetch_progress or job is None or _finished(job):
        return None
    running = [
        p.name
        for p in observed.own_pods
        if p.job == job_name and p.phase == "Running" and not p.terminating
    ]
    return min(running) if running else None


def _download_jobs(model: TritonVLLMModel) -> list[str]:
    """The model's download Jobs, the weights' first, then its Hub LoRA adapters'."""
    jobs = [prefetch_job_name(model)] if model.spec.storage.prefetch else []
    adapters = model.spec.lora.adapters if model.spec.lora else []
    return jobs + [adapter_job_name(model, a) for a in adapters if a.repo is not None]


def _progress_job(model: TritonVLLMModel, observed: Observed, settings: Settings) -> str | None:
    """The download whose progress a pass reads: one at a time, the weights' first."""
    return next((j for j in _download_jobs(model) if _downloading(observed, j, settings)), None)


def progress_pod(body: Mapping[str, Any], observed: Observed, settings: Settings) -> str | None:
    """The pod whose log tail a pass reads for the download's progress; None when none runs."""
    try:
        model = parse_model(dict(body))
    except SpecError:
        return None
    job = _progress_job(model, observed, settings)
    return None if job is None else _downloading(observed, job, settings)


def _strategy_kept(desired: dict[str, Any], live: Mapping[str, Any] | None) -> bool:
    """While the pod template is unchanged, keep the live rollout strategy (no write for it)."""
    if live is None:
        return False
    same = _annotations(live).get(TEMPLATE_HASH_ANNOTATION) == _annotations(desired).get(
        TEMPLATE_HASH_ANNOTATION
    )
    strategy = (live.get("spec") or {}).get("strategy")
    if not (same and strategy):
        return False
    desired["spec"]["strategy"] = {
        "type": strategy.get("type", "RollingUpdate"),
        "rollingUpdate": dict(strategy.get("rollingUpdate") or {}),
    }
    return True


def _refused_pods(deployment: Mapping[str, Any] | None) -> Verdict | None:
    """Pods the API server refused at admission (quota, LimitRange, Pod Security, a webhook):
    the Deployment's ReplicaFailure condition, copied from its ReplicaSet's FailedCreate."""
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return Verdict(
                SCHEDULED,
                "False",
                condition.get("reason") or "FailedCreate",
                f"The API server refused the pods: {condition.get('message', '')}. Change the "
                "namespace's policy (quota, LimitRange, Pod Security, webhook) or the spec.",
            )
    return None


def _scheduled(
    placed: Placed,
    observed: Observed,
    config_hash: str,
    tp: int,
    deployment: Mapping[str, Any] | None,
) -> Verdict:
    """From the pods' own PodScheduled conditions; before there are pods, from the nodes; pods
    refused at admission first (they never exist to say so)."""
    refused = _refused_pods(deployment)
    if refused is not None:
        return refused
    current = [p for p in observed.own_pods if not p.terminating and p.config_hash == config_hash]
    verdicts = [p.scheduled for p in current if p.scheduled]
    stuck = [v for v in verdicts if v[0] == "False"]
    fresh = placed.fresh
    hint = f" {fresh.message}" if isinstance(fresh, Unplaceable) else ""
    if stuck:
        _, reason, message = stuck[0]
        text = f"{len(stuck)} of {len(current)} pods cannot be scheduled: {message}.{hint}"
        return Verdict(SCHEDULED, "False", reason or "Unschedulable", text)
    if current and len(verdicts) == len(current):
        return Verdict(
            SCHEDULED, "True", "Placed", f"tensorParallelSize={tp}; all {len(current)} pods bound."
        )
    if isinstance(fresh, Placement):
        sticky = placed.sticky and fresh.tensor_parallel_size != tp
        message = placed.placement.message if sticky and placed.placement else fresh.message
        return Verdict(SCHEDULED, "True", "Placed", message)
    return Verdict(
        SCHEDULED,
        "False",
        fresh.reason,
        f"{fresh.message} The pods are rendered and wait for such a node (a node "
        "autoscaler can add one).",
    )


def _stale_configmaps(
    model: TritonVLLMModel,
    observed: Observed,
    keep: str,
    deployment: Mapping[str, Any] | None,
    extra: Sequence[str] = (),
) -> list[Key]:
    """Our ConfigMaps of this model that neither the Deployment nor any pod mounts any more."""
    used: set[Any] = {keep, *extra}
    used |= {p.config_map for p in observed.own_pods if p.config_map}
    # A pod's config is also named by the hash it carries (a projected volume hides it).
    own = model.metadata.name
    used |= {f"{own}-config-{p.config_hash}" for p in observed.own_pods if p.config_hash}
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    for volume in (template.get("spec") or {}).get("volumes") or []:
        sources = (volume.get("projected") or {}).get("sources") or [volume]
        used |= {(source.get("configMap") or {}).get("name") for source in sources}
    return sorted(
        (kind, name)
        for kind, name in observed.children
        if kind == "ConfigMap"
        and name not in used
        and (observed.children[(kind, name)].get("metadata") or {})
        .get("labels", {})
        .get(MODEL_LABEL)
        == model.metadata.name
    )


def _pods_of_job(observed: Observed, job_name: str) -> list[Mapping[str, Any]]:
    label = ("batch.kubernetes.io/job-name", job_name)
    return [
        p
        for p in observed.prefetch_pods
        if label in ((p.get("metadata") or {}).get("labels") or {}).items()
    ]


def _verdicts(
    body: Mapping[str, Any], observed: Observed, settings: Settings, plan: Plan
) -> tuple[list[Verdict], dict[str, Any], set[str]]:
    """The conditions, the resolved status fields and the condition types that no longer apply
    (ModelFacts without lookups, Cached without prefetch); fills plan.apply/delete on the way."""
    try:
        model = parse_model(dict(body))
        check_model(model, settings.backend_name)
    except SpecError as err:
        return (
            [
                Verdict(ACCEPTED, "False", err.reason, err.message),
                Verdict(SCHEDULED, "Unknown", "NotAccepted", "The spec must be fixed first."),
                Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
            ],
            {},
            set(),
        )
    # Facts are reported whatever the spec makes of them; while the placement is kept (and no
    # lookup made), status.model and ModelFacts stay those of the lookup that placed it.
    extra: list[Verdict] = []
    facts_status: dict[str, Any] = {}
    stale = set() if facts_query(model.spec, settings) else {MODEL_FACTS}
    if not model.spec.storage.prefetch:
        stale.add(CACHED)
    if observed.facts is not None:
        extra.append(facts_verdict(model, observed.facts))
    if isinstance(observed.facts, ModelFacts):
        facts_status["model"] = status_of(observed.facts).model_dump(
            by_alias=True, exclude_none=True
        )
    accepted = Verdict(ACCEPTED, "True", "Valid", "The spec is valid.")
    gpus = inventory(model.spec, observed.nodes, observed.pods)
    live_deployment = observed.children.get(("Deployment", model.metadata.name))
    try:
        placed = place_model(model, observed.facts, live_deployment, gpus, settings)
        job = render_prefetch_job(model, settings) if model.spec.storage.prefetch else None
    except SpecError as err:
        return (
            [
                Verdict(ACCEPTED, "False", err.reason, err.message),
                Verdict(SCHEDULED, "Unknown", "NotAccepted", "The spec must be fixed first."),
                Verdict(READY, "False", "NotAccepted", "The spec must be fixed first."),
                *extra,
            ],
            facts_status,
            stale,
        )
    name = model.metadata.name
    cached = None
    if job is not None:
        # One download per repo and revision, started as soon as the spec is accepted (also while
        # no node fits yet): created once, never changed (a Job's pod template is immutable).
        job_name = job["metadata"]["name"]
        live_job = observed.children.get(("Job", job_name))
        reading = _progress_job(model, observed, settings) == job_name
        log = observed.prefetch_log if reading else None
        cached = cached_verdict(model, live_job, _pods_of_job(observed, job_name), log)
        extra.append(cached)
        if _downloading(observed, job_name, settings):
            plan.recheck_after = PROGRESS_SECONDS
        if live_job is None:
            plan.apply.append(with_applied_hash(job))
    old_model = (body.get("status") or {}).get("model")
    if placed.sticky and observed.facts is None and old_model and MODEL_FACTS not in stale:
        facts_status["model"] = old_model
    fresh = placed.fresh
    if placed.placement is None and isinstance(fresh, Unplaceable):
        # Unless the message already says what to set (no size known at all).
        unsized = fresh.reason == "ModelSizeUnknown" or (
            isinstance(observed.facts, ModelFactsError) and fresh.reason == observed.facts.reason
        )
        hint = (
            ""
            if unsized
            else " Set an integer spec.tensorParallelSize, or spec.gpu.minMemoryGiB (with "
            "spec.modelSizeGiB where the model's facts are unknown), to have pods rendered for "
            "a node autoscaler."
        )
        return (
            [
                accepted,
                Verdict(SCHEDULED, "False", fresh.reason, fresh.message + hint),
                Verdict(READY, "False", "Unschedulable", "No GPU placement; see Scheduled."),
                *extra,
            ],
            {"replicas": fixed_replicas(model.spec), **facts_status},
            stale,
        )
    placement = placed.placement or fresh
    if not isinstance(placement, Placement):  # unreachable: place_unseen covers Unplaceable
        raise TypeError(placement)
    tp = placement.tensor_parallel_size
    architecture = (
        observed.facts.architecture
        if isinstance(observed.facts, ModelFacts)
        else (facts_status.get("model") or {}).get("architecture")
    )
    progress_job = _progress_job(model, observed, settings)
    progress = (progress_job, observed.prefetch_log) if progress_job else None
    lora = plan_lora(
        model, observed.children, observed.prefetch_pods, architecture, settings, progress
    )
    if lora is None:
        stale.add(LORA_ADAPTERS)
        children = render_all(model, placement, settings)
    else:
        extra.append(lora.verdict)
        if any(state.state == "Downloading" for state in lora.states) and progress_job:
            plan.recheck_after = PROGRESS_SECONDS
        plan.apply.extend(with_applied_hash(job) for job in lora.jobs)
        if lora.raised:
            plan.events.append(("Normal", "LoraLimits", lora.raised))
        facts_status["lora"] = [state.status() for state in lora.states]
        children = render_all(model, placement, settings, lora=lora.limits, adapters=lora.listed)
    configmap = children[0]
    deployment = next(m for m in children if m["kind"] == "Deployment")
    held = held_replicas(live_deployment, body.get("status"))
    if fixed_replicas(model.spec) is None and held is not None:
        # Handing the replicas to an autoscaler: kept until it (or kubectl scale) changes them.
        with_replicas(deployment, held)
    if not _strategy_kept(deployment, live_deployment):
        # A new template: surge when a node has the GPUs for one more pod free now.
        in_use = inventory(model.spec, observed.nodes, [*observed.pods, *observed.own_gpu_pods])
        surge = free_replica_slots(model.spec, in_use, tp) >= 1
        deployment["spec"]["strategy"] = rollout_strategy(surge)
    children = [with_applied_hash(m) for m in children]
    if cached is not None and cached.status != "True" and live_deployment is None:
        # The Deployment waits for the weights, unless it already runs.
        waiting = ("Deployment", "PodDisruptionBudget")
        children = [m for m in children if m["kind"] not in waiting]
    scaler = plan_autoscaler(
        model, observed.keda_served, settings.prometheus_address, observed.children
    )
    if scaler is not None:
        extra.append(scaler.verdict)
        if scaler.manifest is not None and any(m["kind"] == "Deployment" for m in children):
            children.append(with_applied_hash(scaler.manifest))
    else:
        stale.add(AUTOSCALING)
    for manifest in children:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if needs_apply(manifest, observed.children.get(key)):
            plan.apply.append(manifest)
    current_cm = configmap["metadata"]["name"]
    lora_cm = [m["metadata"]["name"] for m in children[1:] if m["kind"] == "ConfigMap"]
    plan.delete.extend(_stale_configmaps(model, observed, current_cm, live_deployment, lora_cm))
    if most_replicas(model.spec) <= 1 and ("PodDisruptionBudget", name) in observed.children:
        plan.delete.append(("PodDisruptionBudget", name))
    kept = scaler.manifest["kind"] if scaler is not None and scaler.manifest else None
    for kind in AUTOSCALER_KINDS:
        if kind != kept and (kind, name) in observed.children:
            plan.delete.append((kind, name))
    config_hash = deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    url = endpoint(model)
    applying = any(m["kind"] == "Deployment" for m in plan.apply)
    desired = fixed_replicas(model.spec)
    zero = "spec.replicas is 0."
    if desired is None:
        # The autoscaler's choice, on the live Deployment (1 until it chooses).
        live_spec = (live_deployment or {}).get("spec") or {}
        desired = int(live_spec.get("replicas", 1))
        zero = "Scaled to zero by the autoscaler; the activation query wakes it."
    floor = model.spec.autoscaling.min_replicas if model.spec.autoscaling else None
    ready, ready_replicas, updated = deployment_readiness(
        live_deployment,
        desired,
        config_hash,
        url,
        applying,
        zero,
        floor,
        _serving(body, config_hash),
    )
    scheduled = _scheduled(placed, observed, config_hash, tp, live_deployment)
    if cached is not None and cached.status != "True" and live_deployment is None:
        ready = Verdict(
            READY,
            "False",
            "Caching",
            f"The serving pods start once the weights are in the volume: {cached.message}",
        )
    resolved = {
        "tensorParallelSize": tp,
        "replicas": desired,
        "currentReplicas": int(((live_deployment or {}).get("status") or {}).get("replicas") or 0),
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model).items())),
        "autoscaler": f"{kept}/{name}" if kept else None,
        "readyReplicas": ready_replicas,
        "updatedReplicas": updated,
        "endpoint": url,
        "endpoints": endpoints(model),
        "configHash": config_hash,
        "configMap": current_cm,
        **facts_status,
    }
    return [accepted, scheduled, ready, *extra], resolved, stale


AUTOSCALER_KINDS = ("ScaledObject", "HorizontalPodAutoscaler")


def _serving(body: Mapping[str, Any], config_hash: str) -> Verdict | None:
    """The model's Ready=True, if it says so for this generation and this config."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    if status.get("configHash") != config_hash:
        return None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == READY
            and condition.get("status") == "True"
            and condition.get("observedGeneration") == generation
        ):
            return Verdict(READY, "True", condition["reason"], condition.get("message", ""))
    return None


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


STATUS_FIELDS = (
    "tensorParallelSize",
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


def plan_reconcile(
    body: Mapping[str, Any], observed: Observed, settings: Settings, now: str
) -> Plan:
    """Everything one pass decides; the caller applies, deletes, writes status if changed."""
    plan = Plan()
    verdicts, resolved, stale = _verdicts(body, observed, settings, plan)
    old_status = dict(body.get("status") or {})
    old_status["conditions"] = [
        c for c in old_status.get("conditions") or [] if c.get("type") not in stale
    ]
    conditions, events = _with_conditions(body, verdicts, old_status, now)
    old_lora = (body.get("status") or {}).get("lora")
    if resolved.get("lora") is not None or old_lora:
        events += adapter_events(old_lora, resolved.get("lora"))
    plan.status["conditions"] = conditions
    plan.events = plan.events + events
    plan.status = {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "conditions": plan.status["conditions"],
        **dict.fromkeys(STATUS_FIELDS),
        **resolved,
    }
    return plan


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
