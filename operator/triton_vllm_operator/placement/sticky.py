"""Sticky placement: the placement a live Deployment was rendered with is kept while the fields
placement reads are unchanged; env, annotations, resources, replicas and the like never move it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..api import TritonVLLMModel, replica_nodes
from .engine import MEMORY_ARGS
from .place import Placement
from .preference import preferred_products

# On the Deployment: the placement it was rendered for.
PLACEMENT_ANNOTATION = "tritonvllm.io/placement"


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def placement_digest(model: TritonVLLMModel) -> str:
    """What a placement depends on: the model and its revision, its size, the tensor-parallel
    size and the nodes a replica spans, spec.gpu, the engine arguments and LoRA settings that
    change its memory or GPUs, and where its pods may run (nodeSelector, affinity,
    tolerations)."""
    spec = model.spec.model_dump(by_alias=True, mode="json")
    read = {
        "model": spec["model"],
        "revision": spec["storage"].get("revision"),
        "modelSizeGiB": spec.get("modelSizeGiB"),
        "tensorParallelSize": spec["tensorParallelSize"],
        "nodesPerReplica": spec.get("nodesPerReplica", 1),
        "gpu": spec["gpu"],
        "engineArgs": {k: v for k, v in spec["engineArgs"].items() if k in MEMORY_ARGS},
        "nodeSelector": spec.get("nodeSelector"),
        "affinity": spec.get("affinity"),
        "tolerations": spec.get("tolerations"),
        # LoRA slots take GPU memory; the adapters listed in them do not change it.
        "lora": {k: v for k, v in (spec.get("lora") or {}).items() if k != "adapters"} or None,
    }
    return _digest(read)


def _legacy_digest(model: TritonVLLMModel) -> str:
    """The digest Deployments rendered by earlier operator versions carry (the whole spec but
    replicas, autoscaling and LoRA adapters): they keep their placement across the upgrade."""
    spec = model.spec.model_dump(by_alias=True, exclude={"replicas", "autoscaling"}, mode="json")
    lora = spec.pop("lora", None)
    if lora is not None:
        spec["lora"] = {k: v for k, v in lora.items() if k != "adapters"}
    return _digest(spec)


def _user_preferred(model: TritonVLLMModel) -> set[str]:
    """Products the user's own preferred node affinity names (not ours to read back)."""
    node_affinity = model.spec.affinity.node_affinity if model.spec.affinity else None
    terms = (
        node_affinity.preferred_during_scheduling_ignored_during_execution if node_affinity else []
    )
    return {v for t in terms for e in t.preference.match_expressions for v in e.values}


def sticky(model: TritonVLLMModel, live: Mapping[str, Any] | None) -> Placement | None:
    """The placement the live Deployment was rendered with (size, memory floor, preferred GPU
    products), while the fields placement reads are unchanged."""
    metadata = (live or {}).get("metadata") or {}
    try:
        recorded = json.loads((metadata.get("annotations") or {}).get(PLACEMENT_ANNOTATION, ""))
    except ValueError:
        return None
    if not isinstance(recorded, dict):
        return None
    if recorded.get("spec") not in (placement_digest(model), _legacy_digest(model)):
        return None
    tp = recorded.get("tensorParallelSize")
    floor = recorded.get("minMemoryMiB")
    if not isinstance(tp, int) or tp < 1 or not (floor is None or isinstance(floor, int)):
        return None
    pod_spec = (((live or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    theirs = _user_preferred(model)
    products = tuple(p for p in preferred_products(pod_spec) if p not in theirs)
    message = f"tensorParallelSize={tp}, kept while the fields placement reads are unchanged"
    nodes = recorded.get("nodesPerReplica", 1)
    if model.spec.nodes_per_replica != "auto":
        nodes = replica_nodes(model.spec)
    elif not isinstance(nodes, int) or nodes < 1:
        return None
    return Placement(
        tp, (), 0, floor, message, preferred_products=products, nodes_per_replica=nodes
    )
