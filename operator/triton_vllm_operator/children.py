"""The diff step of a pass: which desired children to write, which live ones to delete.

A child is written when it is missing, was rendered from another spec (the applied-hash
annotation), or was edited by hand since (the live object no longer covers what we render).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .api import TritonVLLMModel
from .drift import covers
from .observed import Key, Observed
from .render.manifests import MODEL_LABEL, TEMPLATE_HASH_ANNOTATION, digest

APPLIED_HASH_ANNOTATION = "tritonvllm.io/applied-hash"
AUTOSCALER_KINDS = ("ScaledObject", "HorizontalPodAutoscaler")
# Children created once and never changed (a Job's pod template is immutable).
CREATE_ONLY_KINDS = ("Job",)


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """Digest of a rendered child; an equal digest on the live object means we rendered it."""
    return digest(manifest)


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    notes = manifest["metadata"].setdefault("annotations", {})
    notes.pop(APPLIED_HASH_ANNOTATION, None)
    notes[APPLIED_HASH_ANNOTATION] = applied_hash(manifest)
    return manifest


def needs_apply(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, server_made: bool = False
) -> bool:
    """Missing, rendered from another spec, or edited by hand since we applied it (differences
    the API server's own admission made, `server_made`, are not edits)."""
    if live is None:
        return True
    if desired["kind"] in CREATE_ONLY_KINDS:
        return False
    if not same_render(desired, live):
        return True
    return not server_made and not covers(live, desired)


def same_render(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """The live object was applied from this very render (its applied-hash annotation)."""
    rendered = annotations_of(desired).get(APPLIED_HASH_ANNOTATION)
    return annotations_of(live).get(APPLIED_HASH_ANNOTATION) == rendered


def strategy_kept(desired: dict[str, Any], live: Mapping[str, Any] | None) -> bool:
    """While the pod template is unchanged, keep the live rollout strategy (no write for it)."""
    if live is None:
        return False
    same = annotations_of(live).get(TEMPLATE_HASH_ANNOTATION) == annotations_of(desired).get(
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


def _mounted(template: Mapping[str, Any]) -> set[Any]:
    """The ConfigMaps a pod template mounts, projected ones included."""
    names: set[Any] = set()
    for volume in (template.get("spec") or {}).get("volumes") or []:
        sources = (volume.get("projected") or {}).get("sources") or [volume]
        names |= {(source.get("configMap") or {}).get("name") for source in sources}
    return names


def stale_configmaps(model: TritonVLLMModel, observed: Observed, keep: Sequence[str]) -> list[Key]:
    """Our ConfigMaps of this model that nothing mounts or may mount again: no pod, not the
    Deployment, and no ReplicaSet of the model with replicas (a rollback or a stalled rollout
    scales an old ReplicaSet back up, and its pods need their config)."""
    used: set[Any] = set(keep)
    used |= {p.config_map for p in observed.own_pods if p.config_map}
    # A pod's config is also named by the hash it carries (a projected volume hides it).
    own = model.metadata.name
    used |= {f"{own}-config-{p.config_hash}" for p in observed.own_pods if p.config_hash}
    for (kind, _), obj in observed.children.items():
        spec = obj.get("spec") or {}
        if kind == "Deployment" or (kind == "ReplicaSet" and int(spec.get("replicas") or 0) > 0):
            used |= _mounted(spec.get("template") or {})
    return sorted(
        (kind, name)
        for (kind, name), obj in observed.children.items()
        if kind == "ConfigMap"
        and name not in used
        and ((obj.get("metadata") or {}).get("labels") or {}).get(MODEL_LABEL) == own
    )


def unwanted(
    model: TritonVLLMModel, observed: Observed, desired: Sequence[Mapping[str, Any]]
) -> list[Key]:
    """Live children this spec no longer asks for: stale ConfigMaps, a PDB of a single replica
    (or of groups), an autoscaler of the other kind (or of none), an InferencePool without
    spec.gateway, the groups of replicas scaled away."""
    name = model.metadata.name
    kinds = {m["kind"] for m in desired}
    configmaps = [m["metadata"]["name"] for m in desired if m["kind"] == "ConfigMap"]
    delete = stale_configmaps(model, observed, configmaps)
    for kind in ("PodDisruptionBudget", *AUTOSCALER_KINDS, "InferencePool"):
        if kind not in kinds and (kind, name) in observed.children:
            delete.append((kind, name))
    # The groups of a multi-node model's replicas scaled away.
    names = {(m["kind"], m["metadata"]["name"]) for m in desired}
    if "StatefulSet" in kinds:
        delete += [k for k in observed.children if k[0] == "StatefulSet" and k not in names]
    return delete
