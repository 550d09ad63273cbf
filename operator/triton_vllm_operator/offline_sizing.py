"""Placement from a model's own facts for `render --model DIR`: sizing applied to Node files.

Pure: the facts come from a local snapshot directory, the nodes from YAML; nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .api import TritonVLLMModel
from .model_facts import ModelFacts, facts_from_dir, with_size_hint
from .placement import NodeGPUs, Placement, inventory
from .sizing import (
    EngineArgError,
    EngineLimits,
    GPUs,
    Refusal,
    Sized,
    check_tensor_parallel_size,
    choose_tensor_parallel_size,
    split_problem,
    valid_tensor_parallel_sizes,
)
from .validation import SpecError


def _eligible(model: TritonVLLMModel, node: NodeGPUs) -> bool:
    """Ready, schedulable, tolerated, labelled with its GPU memory, and matching spec.gpu."""
    spec = model.spec
    if node.unusable_reason or not node.memory_mib:
        return False
    if spec.gpu.product and node.product != spec.gpu.product:
        return False
    if spec.gpu.min_memory_gi_b and node.memory_mib < spec.gpu.min_memory_gi_b * 1024:
        return False
    return all(node.labels.get(k) == v for k, v in spec.node_selector.items())


def _size_on(
    facts: ModelFacts, limits: EngineLimits, tp: int | str, node: NodeGPUs
) -> Sized | Refusal:
    gpus = GPUs.from_mib(node.allocatable, node.memory_mib or 0, node.product)
    if tp == "auto":
        return choose_tensor_parallel_size(facts, limits, gpus)
    return check_tensor_parallel_size(facts, limits, gpus, int(tp))


def place_with_facts(
    model: TritonVLLMModel, facts_dir: str, nodes: Sequence[Mapping[str, Any]] | None
) -> Placement:
    """The tensor-parallel size and nodes for `model` from the snapshot at `facts_dir`."""
    name = model.metadata.name
    spec = model.spec
    try:
        facts = with_size_hint(facts_from_dir(facts_dir), spec.model_size_gi_b)
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
    candidates = [n for n in inventory(spec, nodes, []) if _eligible(model, n)]
    if not candidates:
        raise SpecError(
            "NoNodeFits",
            f"{name}: no Ready node with a {spec.gpu.resource_name} memory label matches spec.gpu "
            "and spec.nodeSelector",
        )
    results = {n.name: _size_on(facts, limits, tp, n) for n in candidates}
    sized = {k: v for k, v in results.items() if isinstance(v, Sized)}
    if not sized:
        largest = max(candidates, key=lambda n: (n.allocatable, n.memory_mib or 0))
        refusal = results[largest.name]
        reason = refusal.reason if isinstance(refusal, Refusal) else "NoNodeFits"
        raise SpecError(reason, f"{name}: on {largest.describe()}: {refusal.message}")
    chosen = min(s.tensor_parallel_size for s in sized.values())
    fits = {
        n.name: (n, result)
        for n in candidates
        if n.allocatable >= chosen
        and isinstance(result := _size_on(facts, limits, chosen, n), Sized)
    }
    fitting = [node for node, _ in fits.values()]
    return Placement(
        chosen,
        tuple(fits),
        sum(n.free // chosen for n in fitting),
        min(n.memory_mib or 0 for n in fitting),
        next(iter(fits.values()))[1].message,
    )
