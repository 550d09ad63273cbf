"""Every child a model should have, from its spec, its facts and the nodes: the render step of
a reconcile pass, and all of the `render` command (one function, so both produce the same)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .api import TritonVLLMModel, fixed_replicas, replica_nodes
from .children import strategy_kept, with_applied_hash
from .conditions import AUTOSCALING, CACHED, LORA_ADAPTERS, MODEL_FACTS, Verdict
from .downloads import downloading, pods_of_job, progress_job
from .lora import LoraPass, plan_lora
from .model_facts import ModelFacts, status_of
from .observed import Observed
from .placement import (
    Placed,
    Placement,
    facts_query,
    facts_verdict,
    free_replica_slots,
    inventory,
    place_model,
    placement_digest,
)
from .prefetch_status import cached_verdict
from .render.autoscaling import AutoscalerPlan, held_replicas, plan_autoscaler
from .render.groups import as_groups
from .render.inference_pool import GATEWAY, plan_inference_pool
from .render.manifests import (
    CONFIG_HASH_ANNOTATION,
    render_all,
    rollout_strategy,
    with_replicas,
)
from .render.prefetch import PROGRESS_SECONDS, render_prefetch_job
from .settings import Settings
from .validation import SpecError, check_token_endpoint


@dataclass
class Desired:
    """What the model should have; `placement` None when no pods can be rendered yet."""

    # The model as placed: `nodesPerReplica: auto` resolved to the nodes placement chose.
    model: TritonVLLMModel | None = None
    placed: Placed | None = None  # None: the spec was refused before placement
    placement: Placement | None = None
    refusal: SpecError | None = None  # why the spec cannot run anywhere
    # In the order to apply: download Jobs, ConfigMaps, Deployment, Service, PDB, autoscaler.
    children: list[dict[str, Any]] = field(default_factory=list)
    # ModelFacts, Cached, LoraAdapters and Autoscaling, as far as they apply to this spec.
    verdicts: list[Verdict] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # condition types that no longer apply
    status: dict[str, Any] = field(default_factory=dict)  # status.model, status.lora
    cached: Verdict | None = None
    scaler: AutoscalerPlan | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    recheck_after: float | None = None

    # The pod template's config hash (also with no group to carry it: autoscaled to zero).
    config_hash: str | None = None

    @property
    def waits_for_weights(self) -> bool:
        return self.cached is not None and self.cached.status != "True"


def _facts(model: TritonVLLMModel, observed: Observed) -> Desired:
    """What the facts lookup found, as ModelFacts and status.model."""
    out = Desired()
    if observed.facts is not None:
        out.verdicts.append(facts_verdict(model, observed.facts))
    if isinstance(observed.facts, ModelFacts):
        out.status["model"] = status_of(observed.facts).model_dump(by_alias=True, exclude_none=True)
    return out


def _surge(model: TritonVLLMModel, observed: Observed, tp: int) -> bool:
    """Surge when a node has the GPUs for one more pod free now (else replace one at a time)."""
    in_use = inventory(model.spec, observed.nodes, [*observed.pods, *observed.own_gpu_pods])
    return free_replica_slots(model.spec, in_use, tp) >= 1


SURGE_STUCK = (
    "The rollout's extra pod cannot be scheduled beside the running ones: replacing one pod at "
    "a time instead (one replica fewer serves while each is replaced)."
)


def _surge_stuck(
    deployment: dict[str, Any], live: Mapping[str, Any] | None, observed: Observed
) -> bool:
    """A surging rollout whose new pod the scheduler cannot place while old pods still run."""
    rolling = ((live or {}).get("spec") or {}).get("strategy", {}).get("rollingUpdate") or {}
    if str(rolling.get("maxSurge")) != "1" or str(rolling.get("maxUnavailable")) != "0":
        return False
    config_hash = deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    new = [p for p in observed.own_pods if p.config_hash == config_hash and not p.terminating]
    old = [
        p
        for p in observed.own_pods
        if p.config_hash != config_hash and not p.terminating and p.job is None
    ]
    unschedulable = [
        p for p in new if p.scheduled and p.scheduled[:2] == ("False", "Unschedulable")
    ]
    return bool(unschedulable and old)


def desire(
    model: TritonVLLMModel,
    observed: Observed,
    settings: Settings,
    status: dict[str, Any] | None = None,
) -> Desired:
    """Facts -> placement -> every child rendered (download Jobs, LoRA list, autoscaler, PDB and
    rollout strategy included). `status`: the model's current status (kept facts, handed-over
    replicas). A spec that cannot run anywhere comes back with `refusal` set."""
    status = status or {}
    name = model.metadata.name
    out = _facts(model, observed)
    try:
        check_token_endpoint(model, settings.hf_token_endpoints, settings.hf_endpoint)
    except SpecError as err:
        out.refusal = err
        return out
    if not facts_query(model.spec, settings):
        out.stale.add(MODEL_FACTS)
    if not model.spec.storage.prefetch:
        out.stale.add(CACHED)
    gpus = inventory(model.spec, observed.nodes, observed.pods)
    # The live workload records its placement: the Deployment, or a multi-node model's first group.
    live = observed.children.get(("Deployment", name)) or observed.children.get(
        ("StatefulSet", f"{name}-g0")
    )
    try:
        out.placed = place_model(model, observed.facts, live, gpus, settings)
        job = render_prefetch_job(model, settings) if model.spec.storage.prefetch else None
    except SpecError as err:
        out.refusal = err
        return out
    jobs: list[dict[str, Any]] = []
    if job is not None:
        # One download per repo and revision, started as soon as the spec is accepted (also while
        # no node fits yet): created once, never changed.
        job_name = job["metadata"]["name"]
        reading = progress_job(model, observed, settings) == job_name
        log = observed.prefetch_log if reading else None
        live_job = observed.children.get(("Job", job_name))
        out.cached = cached_verdict(model, live_job, pods_of_job(observed, job_name), log)
        out.verdicts.append(out.cached)
        if downloading(observed, job_name, settings):
            out.recheck_after = PROGRESS_SECONDS
        jobs.append(job)
    old_model = status.get("model")
    if out.placed.sticky and observed.facts is None and old_model and MODEL_FACTS not in out.stale:
        out.status["model"] = old_model  # the facts that placed the live Deployment
    placement = out.placed.placement
    if placement is None:
        out.children = [with_applied_hash(j) for j in jobs]
        return out
    if model.spec.nodes_per_replica == "auto":
        # Rendered, checked and reported with the node count placement chose; kept (sticky) for
        # the spec as written.
        placement = replace(placement, spec_digest=placement_digest(model))
        spec = model.spec.model_copy(update={"nodes_per_replica": placement.nodes_per_replica})
        model = out.model = model.model_copy(update={"spec": spec})
    out.placement = placement
    lora = _lora(model, observed, settings, out)
    jobs += lora.jobs if lora else []
    children = render_all(
        model,
        placement,
        settings,
        lora=lora.limits if lora else None,
        adapters=lora.listed if lora else None,
    )
    template = next(m for m in children if m["kind"] == "Deployment")["spec"]["template"]
    out.config_hash = template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    if replica_nodes(model.spec) > 1:
        children = as_groups(model, children)
    else:
        _deployment_rollout(model, children, live, status, observed, out)
    out.scaler = plan_autoscaler(
        model, observed.keda_served, settings.prometheus_address, observed.children
    )
    if out.scaler is None:
        out.stale.add(AUTOSCALING)
    else:
        out.verdicts.append(out.scaler.verdict)
        if out.scaler.manifest is not None:
            children.append(out.scaler.manifest)
    pool = plan_inference_pool(
        model, observed.pool_served, observed.children.get(("InferencePool", name))
    )
    if pool.verdict is None:
        out.stale.add(GATEWAY)
    else:
        out.verdicts.append(pool.verdict)
    if pool.manifest is not None:
        children.append(pool.manifest)
    out.children = [with_applied_hash(m) for m in [*jobs, *children]]
    return out


def _deployment_rollout(
    model: TritonVLLMModel,
    children: list[dict[str, Any]],
    live: Mapping[str, Any] | None,
    status: Mapping[str, Any],
    observed: Observed,
    out: Desired,
) -> None:
    """The Deployment's replicas while an autoscaler takes them over, and its rollout strategy."""
    deployment = next(m for m in children if m["kind"] == "Deployment")
    held = held_replicas(live, status)
    if fixed_replicas(model.spec) is None and held is not None:
        # Handing the replicas to an autoscaler: kept until it (or kubectl scale) changes them.
        with_replicas(deployment, held)
    if not strategy_kept(deployment, live):
        assert out.placement is not None
        surge = _surge(model, observed, out.placement.tensor_parallel_size)
        deployment["spec"]["strategy"] = rollout_strategy(surge)
    elif _surge_stuck(deployment, live, observed):
        # The GPUs the surge pod was counted on are gone (another workload took them): waiting
        # would only end at the progress deadline. Replace one pod at a time instead.
        deployment["spec"]["strategy"] = rollout_strategy(False)
        out.events.append(("Normal", "SurgeUnschedulable", SURGE_STUCK))


def _lora(
    model: TritonVLLMModel, observed: Observed, settings: Settings, out: Desired
) -> LoraPass | None:
    """spec.lora's adapters: their states, the Jobs that download them, the limits."""
    facts = observed.facts
    architecture = (
        facts.architecture
        if isinstance(facts, ModelFacts)
        else (out.status.get("model") or {}).get("architecture")
    )
    downloading_job = progress_job(model, observed, settings)
    progress = (downloading_job, observed.prefetch_log) if downloading_job else None
    lora = plan_lora(
        model, observed.children, observed.prefetch_pods, architecture, settings, progress
    )
    if lora is None:
        out.stale.add(LORA_ADAPTERS)
        return None
    out.verdicts.append(lora.verdict)
    if any(state.state == "Downloading" for state in lora.states) and downloading_job:
        out.recheck_after = PROGRESS_SECONDS
    if lora.raised:
        out.events.append(("Normal", "LoraLimits", lora.raised))
    out.status["lora"] = [state.status() for state in lora.states]
    return lora
