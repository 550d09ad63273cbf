"""The readiness checks of a pass: small pure functions, each returning one condition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conditions import READY, SCHEDULED, Verdict, spec_observed
from .observed import Observed
from .placement import Placed, Placement, Unplaceable
from .render.manifests import CONFIG_HASH_ANNOTATION


def refused_pods(deployment: Mapping[str, Any] | None) -> Verdict | None:
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


def scheduled(
    placed: Placed,
    observed: Observed,
    config_hash: str,
    tp: int,
    deployment: Mapping[str, Any] | None,
) -> Verdict:
    """From the pods' own PodScheduled conditions; before there are pods, from the nodes; pods
    refused at admission first (they never exist to say so)."""
    refused = refused_pods(deployment)
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
        warning = placed.placement.warning if placed.placement else None
        said = f" {warning.message}" if warning else ""
        spans = placed.placement.nodes_per_replica if placed.placement else 1
        across = f" x {spans} nodes a replica" if spans > 1 else ""
        bound = f"tensorParallelSize={tp}{across}; all {len(current)} pods bound.{said}"
        return Verdict(SCHEDULED, "True", "Placed", bound)
    if isinstance(fresh, Placement):
        kept = placed.sticky and fresh.tensor_parallel_size != tp
        message = placed.placement.message if kept and placed.placement else fresh.message
        return Verdict(SCHEDULED, "True", "Placed", message)
    return Verdict(
        SCHEDULED,
        "False",
        fresh.reason,
        f"{fresh.message} The pods are rendered and wait for such a node (a node "
        "autoscaler can add one).",
    )


def unplaced(fresh: Unplaceable, unsized: bool) -> tuple[Verdict, Verdict]:
    """Scheduled and Ready when no placement can be rendered at all."""
    hint = (
        ""
        if unsized
        else " Set an integer spec.tensorParallelSize, or spec.gpu.minMemoryGiB (with "
        "spec.modelSizeGiB where the model's facts are unknown), to have pods rendered for "
        "a node autoscaler."
    )
    return (
        Verdict(SCHEDULED, "False", fresh.reason, fresh.message + hint),
        Verdict(READY, "False", "Unschedulable", "No GPU placement; see Scheduled."),
    )


def serving_before(body: Mapping[str, Any], config_hash: str) -> Verdict | None:
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


def caching(cached: Verdict) -> Verdict:
    """Ready while the serving pods wait for the prefetch Job."""
    return Verdict(
        READY,
        "False",
        "Caching",
        f"The serving pods start once the weights are in the volume: {cached.message}",
    )


def group_readiness(
    groups: Mapping[str, Mapping[str, Any] | None],
    nodes: int,
    config_hash: str,
    endpoint: str,
    applying: bool,
    autoscaled_floor: int | None = None,
) -> tuple[Verdict, int, int]:
    """Ready of a multi-node model: whole groups (every rank ready) running this config; also the
    ready and updated group counts. `groups`: each group's live StatefulSet, by name.

    `autoscaled_floor`: the groups are an autoscaler's; while every live group runs this config,
    the model serves once this many (its minimum, at least one) are whole: groups added or
    removed with the load are not a rollout, and Ready does not flap with it."""
    replicas = len(groups)
    current = [s for s in groups.values() if s is not None and _config_of(s) == config_hash]
    updated = sum(_updated(sts, nodes) for sts in current)
    whole = sum(_whole(sts, nodes) for sts in current)
    counts = f"{updated} of {replicas} groups of {nodes} nodes updated, {whole} whole and ready"
    if replicas == 0:
        zero = "spec.replicas is 0." if autoscaled_floor is None else "Scaled to zero."
        return Verdict(READY, "False", "ScaledToZero", zero), 0, 0
    old = [s for s in groups.values() if s is not None and _config_of(s) != config_hash]
    floor = min(max(autoscaled_floor or 0, 1), replicas)
    if autoscaled_floor is not None and not old and whole >= floor and whole < replicas:
        message = (
            f"{whole} of {replicas} groups of {nodes} nodes whole and ready (the autoscaler is "
            f"scaling); the model serves at {endpoint}."
        )
        return Verdict(READY, "True", "ModelServing", message), whole, updated
    if applying or updated < replicas:
        return Verdict(READY, "False", "RollingOut", f"Rolling out: {counts}."), whole, updated
    if whole < replicas:
        message = (
            f"{counts}: a group serves once all its ranks run (kubectl get pods -l "
            "tritonvllm.io/group=<group> -o wide)."
        )
        return Verdict(READY, "False", "PodsNotReady", message), whole, updated
    message = f"All {replicas} replicas ({nodes} nodes each) serve the model at {endpoint}."
    return Verdict(READY, "True", "ModelServing", message), whole, updated


def ranks(observed: Observed) -> list[dict[str, Any]]:
    """Every pod of the model's groups: its group, rank, node and readiness, for status."""
    pods = [p for p in observed.own_pods if p.group and p.rank is not None and not p.terminating]
    return [
        {
            "group": p.group,
            "rank": p.rank,
            "pod": p.name,
            "node": p.node,
            "ready": p.ready,
            "uid": p.uid,
            "restarts": p.restarts,
        }
        for p in sorted(pods, key=lambda p: (p.group or "", p.rank or 0))
    ]


def _config_of(sts: Mapping[str, Any]) -> str | None:
    template = (sts.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)


def _updated(sts: Mapping[str, Any], nodes: int) -> bool:
    """The StatefulSet controller saw its latest spec and every rank runs that template."""
    updated = int((sts.get("status") or {}).get("updatedReplicas") or 0)
    return spec_observed(sts) and updated >= nodes


def _whole(sts: Mapping[str, Any], nodes: int) -> bool:
    status = sts.get("status") or {}
    return _updated(sts, nodes) and int(status.get("readyReplicas") or 0) >= nodes


def one_group_at_a_time(
    apply: list[dict[str, Any]], observed: Observed, nodes: int
) -> list[dict[str, Any]]:
    """A new config reaches the groups one at a time: a group being replaced serves nothing, so
    the next one starts only when every group already on the new config is whole and ready."""
    new_config = {_config_of(m) for m in apply if m["kind"] == "StatefulSet"}
    live = {name: sts for (kind, name), sts in observed.children.items() if kind == "StatefulSet"}
    busy = any(_config_of(sts) in new_config and not _whole(sts, nodes) for sts in live.values())
    out: list[dict[str, Any]] = []
    for manifest in apply:
        current = live.get(manifest["metadata"]["name"])
        rolling = (
            manifest["kind"] == "StatefulSet"
            and current is not None
            and _config_of(current) != _config_of(manifest)
        )
        if rolling and busy:
            continue  # waits for the group ahead of it
        busy = busy or rolling
        out.append(manifest)
    return out
