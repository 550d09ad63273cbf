"""Placement from a model's own facts: sizing (sizing.py) applied to the nodes' GPUs.

Pure: takes the facts and the nodes' GPUs (`placement.inventory`), talks to nothing. The
`render --model DIR` command uses it offline; the reconcile uses it with facts from the Hub.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .api import TritonVLLMModel, TritonVLLMModelSpec
from .model_facts import ModelFacts, facts_from_dir, with_size_hint
from .placement import MEMORY_LABEL, NodeGPUs, Placement, Unplaceable, inventory, missing_product
from .settings import Settings
from .sizing import (
    EngineArgError,
    EngineLimits,
    GPUs,
    Sized,
    check_context,
    check_split,
    check_tensor_parallel_size,
    choose_tensor_parallel_size,
    plan_memory,
    split_problem,
    valid_tensor_parallel_sizes,
)
from .validation import SpecError

MIB = 1024**2


@dataclass(frozen=True)
class FactsQuery:
    """Where the control loop looks a model's facts up."""

    repo: str
    revision: str | None
    endpoint: str | None
    token_secret: tuple[str, str] | None = None  # (name, key) of spec.storage.hfTokenSecret


def facts_query(spec: TritonVLLMModelSpec, settings: Settings) -> FactsQuery | None:
    """The Hub lookup a spec asks for; None for a path in the cache volume or with lookups off."""
    if not settings.model_facts or spec.model.startswith("/"):
        return None
    secret = spec.storage.hf_token_secret
    return FactsQuery(
        spec.model,
        spec.storage.revision,
        spec.storage.endpoint or settings.hf_endpoint,
        (secret.name, secret.key) if secret else None,
    )


def check_facts(spec: TritonVLLMModelSpec, facts: ModelFacts, name: str) -> EngineLimits:
    """The engine's limits, or SpecError for what no node could change: a tensorParallelSize
    vLLM cannot split the model over, a max_model_len above the model's own context."""
    try:
        limits = EngineLimits.from_engine_args(spec.engine_args)
    except EngineArgError as err:
        raise SpecError("InvalidEngineArgs", f"{name}: {err}") from err
    tp = spec.tensor_parallel_size
    refusal = (check_split(facts, tp) if tp != "auto" else None) or check_context(facts, limits)
    if refusal:
        raise SpecError(refusal.reason, refusal.message)
    return limits


def min_memory_mib(facts: ModelFacts, limits: EngineLimits, tp: int) -> int | None:
    """The smallest GPU (MiB) that holds the model at `tp` with one max_model_len sequence."""
    length = limits.max_model_len or facts.max_context
    if length is None or facts.weights_bytes is None:
        return None
    plan = plan_memory(facts, limits, GPUs(tp, 0), tp, length)
    return math.ceil(plan.needed_bytes / limits.gpu_memory_utilization / MIB)


def place_unseen_by_facts(
    spec: TritonVLLMModelSpec, facts: ModelFacts, limits: EngineLimits, why: Unplaceable
) -> Placement | None:
    """Pods to render before a node that fits exists (for node autoscalers), pinned to GPUs
    large enough: an explicit size as asked, `auto` on GPUs of spec.gpu.minMemoryGiB."""
    tp = spec.tensor_parallel_size
    if tp != "auto":
        return Placement(tp, (), 0, min_memory_mib(facts, limits, tp), why.message)
    memory_gib = spec.gpu.min_memory_gi_b
    if not memory_gib:
        return None
    gpus = GPUs.from_mib(facts.attention_heads * limits.pipeline_parallel_size, memory_gib * 1024)
    sized = choose_tensor_parallel_size(facts, limits, gpus)
    if not isinstance(sized, Sized):
        return None
    size = sized.tensor_parallel_size
    return Placement(size, (), 0, min_memory_mib(facts, limits, size), why.message)


def _excluded(spec: TritonVLLMModelSpec, node: NodeGPUs) -> str | None:
    """Why the model's pods may not use the node (or cannot be sized on it), or None."""
    if node.unusable_reason:
        return node.unusable_reason
    if spec.gpu.product and node.product != spec.gpu.product:
        return f"product {node.product or 'unlabelled'}"
    if not node.memory_mib:
        return f"no {MEMORY_LABEL} label to size the model on"
    if spec.gpu.min_memory_gi_b and node.memory_mib < spec.gpu.min_memory_gi_b * 1024:
        return f"GPU memory {node.memory_mib // 1024} GiB < {spec.gpu.min_memory_gi_b} GiB"
    for key, value in spec.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    return None


def _size_on(
    facts: ModelFacts, limits: EngineLimits, tp: int | str, node: NodeGPUs
) -> Sized | Unplaceable:
    gpus = GPUs.from_mib(node.allocatable, node.memory_mib or 0, node.product)
    if tp == "auto":
        result = choose_tensor_parallel_size(facts, limits, gpus)
    else:
        result = check_tensor_parallel_size(facts, limits, gpus, int(tp))
    return result if isinstance(result, Sized) else Unplaceable(result.reason, result.message)


def place_by_facts(
    spec: TritonVLLMModelSpec, facts: ModelFacts, limits: EngineLimits, gpus: list[NodeGPUs]
) -> Placement | Unplaceable:
    """The smallest tensor-parallel size that fits some eligible node, and every node it fits.

    An explicit spec.tensorParallelSize is checked instead of chosen. The pods are pinned to
    GPUs at least as large as the smallest that fits (`Placement.min_memory_mib`).
    """
    if not gpus:
        return Unplaceable(
            "NoGPUNodes", f"No node has allocatable {spec.gpu.resource_name}: add GPU nodes."
        )
    missing = missing_product(spec, gpus)
    if missing is not None:
        return missing
    excluded = {n.name: why for n in gpus if (why := _excluded(spec, n))}
    candidates = [n for n in gpus if n.name not in excluded]
    if not candidates:
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(excluded.items()))
        return Unplaceable("NoNodeFits", f"No node can run {facts.name}. Excluded: {why}.")
    results = {n.name: _size_on(facts, limits, spec.tensor_parallel_size, n) for n in candidates}
    sizes = [r.tensor_parallel_size for r in results.values() if isinstance(r, Sized)]
    if not sizes:
        largest = max(candidates, key=lambda n: (n.allocatable, n.memory_mib or 0))
        refusal = results[largest.name]
        if isinstance(refusal, Sized):  # not reached: no node fits
            return Unplaceable("NoNodeFits", refusal.message)
        return Unplaceable(refusal.reason, f"On {largest.describe()}: {refusal.message}")
    chosen = min(sizes)
    per_pod = chosen * limits.pipeline_parallel_size
    fits: dict[str, tuple[NodeGPUs, Sized]] = {}
    for node in candidates:
        result = _size_on(facts, limits, chosen, node)
        if node.allocatable >= per_pod and isinstance(result, Sized):
            fits[node.name] = (node, result)
    nodes = [node for node, _ in fits.values()]
    return Placement(
        chosen,
        tuple(fits),
        sum(n.free // per_pod for n in nodes),
        min(n.memory_mib or 0 for n in nodes),
        next(iter(fits.values()))[1].message,
    )


def place_from_snapshot(
    model: TritonVLLMModel, snapshot_dir: str, nodes: Sequence[Mapping[str, Any]] | None
) -> Placement:
    """`render --model DIR`: the placement from a local snapshot's facts; SpecError if none."""
    name = model.metadata.name
    spec = model.spec
    try:
        facts = with_size_hint(facts_from_dir(snapshot_dir), spec.model_size_gi_b)
        limits = EngineLimits.from_engine_args(spec.engine_args)
    except EngineArgError as err:
        raise SpecError("InvalidEngineArgs", f"{name}: {err}") from err
    tp = spec.tensor_parallel_size
    if nodes is None:
        if tp == "auto":
            raise SpecError(
                "NeedsNodes",
                f"{name}: tensorParallelSize is auto; pass --nodes FILE to size it on them",
            )
        problem = split_problem(facts, tp)
        if problem:
            sizes = ", ".join(map(str, valid_tensor_parallel_sizes(facts)))
            raise SpecError(
                "TensorParallelSizeInvalid",
                f"{name}: {facts.name} cannot be split over {tp} GPUs ({problem}); use {sizes}",
            )
        return Placement(tp, (), 0, None, "rendered offline without nodes")
    placement = place_by_facts(spec, facts, limits, inventory(spec, nodes, []))
    if isinstance(placement, Unplaceable):
        raise SpecError(placement.reason, f"{name}: {placement.message}")
    return placement
