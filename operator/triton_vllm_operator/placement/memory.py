"""The one memory plan interface placement sizes a model by, and which plan a spec gets: the
model's facts, else spec.modelSizeGiB, else none (an explicit tensorParallelSize only)."""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from ..api import TritonVLLMModelSpec, replica_nodes
from ..model_facts import ModelFacts, with_size_hint
from .budget import GPUs, Refusal, Sized
from .by_facts import FactsPlan
from .by_size import SizePlan, UnsizedPlan
from .engine import EngineLimits, pipeline_parallel_size


class MemoryPlan(Protocol):
    """What a replica needs of a node's GPUs."""

    @property
    def pipeline_parallel_size(self) -> int: ...

    @property
    def needs_memory_label(self) -> bool:
        """Whether a node must say its GPUs' memory (nvidia.com/gpu.memory) to be sized."""
        ...

    def describe(self) -> str:
        """What is placed, for messages: the model's name or its size."""
        ...

    def fit(self, gpus: GPUs, tp: int) -> Sized | Refusal:
        """Whether a replica at tensor-parallel size `tp` fits these GPUs, with the numbers."""
        ...

    def choose(self, gpus: GPUs) -> Sized | Refusal:
        """The smallest tensor-parallel size that fits these GPUs (`auto`)."""
        ...

    def min_memory_mib(self, tp: int) -> int | None:
        """The smallest GPU a replica at `tp` fits, where the plan can tell."""
        ...


def size_unknown_message(spec: TritonVLLMModelSpec, why: str = "") -> str:
    """`auto` with nothing to size the model by: no facts, no spec.modelSizeGiB."""
    return (
        f"{why or 'The size of the model is unknown.'} tensorParallelSize is auto: set "
        "spec.modelSizeGiB (the weights' size) or an integer spec.tensorParallelSize."
    )


def memory_plan(
    spec: TritonVLLMModelSpec,
    facts: ModelFacts | None,
    why: str = "",
    reason: str = "ModelSizeUnknown",
) -> MemoryPlan:
    """The plan for `spec`: by the facts where they give the weights' size (or
    spec.modelSizeGiB fills it in), else by spec.modelSizeGiB, else none. `why` and `reason` say
    why there are no facts, for the refusal of `auto`."""
    stages = pipeline_parallel_size(spec.engine_args)
    nodes = replica_nodes(spec)
    if facts is not None:
        sized = with_size_hint(facts, spec.model_size_gi_b)
        if sized.weights_bytes is not None:
            limits = EngineLimits.from_engine_args(spec.engine_args)
            return FactsPlan(sized, replace(limits, nodes_per_replica=nodes))
        why = f"{facts.name} has no safetensors index or header to size its weights by."
    if spec.model_size_gi_b is not None:
        return SizePlan(spec.model_size_gi_b, stages, nodes)
    return UnsizedPlan(reason, size_unknown_message(spec, why), stages)
