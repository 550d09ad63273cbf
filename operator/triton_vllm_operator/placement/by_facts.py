"""The memory plan from a model's facts: weights, the KV cache of one max_model_len sequence by
layer type, and an overhead allowance, within gpu_memory_utilization of each GPU; the
tensor-parallel sizes are those vLLM can split the model over (split.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model_facts import GIB, ModelFacts
from . import kv_cache
from .budget import MEMORY_REASONS, MIB, GPUBudget, GPUs, Refusal, Sized, gib
from .engine import EngineLimits
from .split import check_split, or_list, valid_tensor_parallel_sizes

# Per GPU, beside the weights and the KV cache, within gpu_memory_utilization: the activations of
# vLLM's profiling step, CUDA graphs, the CUDA context and NCCL buffers.
OVERHEAD_BYTES = 2 * GIB
# A suggested max_model_len is rounded down to a multiple of this (of KV blocks below it).
ROUND_TOKENS = 1024
KV_BLOCK_TOKENS = 16


def _round_down(tokens: int) -> int:
    step = ROUND_TOKENS if tokens >= ROUND_TOKENS else KV_BLOCK_TOKENS
    return tokens // step * step


@dataclass(frozen=True)
class FactsPlan:
    """Sizes a model by its facts (the weights' size must be known) and the engine's limits."""

    facts: ModelFacts
    limits: EngineLimits
    overhead_bytes: int = OVERHEAD_BYTES

    @property
    def pipeline_parallel_size(self) -> int:
        return self.limits.pipeline_parallel_size

    @property
    def needs_memory_label(self) -> bool:
        return True

    def describe(self) -> str:
        return self.facts.name

    # --- the numbers ----------------------------------------------------------------------

    def weights_bytes(self) -> int:
        """The weights in the dtype vLLM loads them in (a quantized checkpoint as it is)."""
        facts, limits = self.facts, self.limits
        recast = limits.dtype != "auto" or facts.dtype == "float32"
        if facts.quantization is None and facts.parameters and recast:
            return facts.parameters * limits.compute_dtype_bytes(facts)
        if facts.weights_bytes is None:
            raise ValueError(f"the weights of {facts.name} are of unknown size")
        return facts.weights_bytes

    def max_model_len(self) -> int | Refusal:
        """The sequence length to hold: max_model_len, else the model's own context."""
        facts, limits = self.facts, self.limits
        if limits.max_model_len is None:
            if facts.max_context is None:
                return Refusal(
                    "MaxModelLenUnknown",
                    f"config.json of {facts.name} does not say how long a sequence it takes: set "
                    "spec.engineArgs.max_model_len.",
                )
            return facts.max_context
        if facts.max_context is not None and limits.max_model_len > facts.max_context:
            return Refusal(
                "MaxModelLenAboveModel",
                f"max_model_len {limits.max_model_len} is above the {facts.max_context} tokens "
                f"{facts.name} takes (vLLM refuses it): set spec.engineArgs.max_model_len to at "
                f"most {facts.max_context}.",
                largest_max_model_len=facts.max_context,
            )
        return limits.max_model_len

    def budget(self, gpus: GPUs, tp: int, length: int) -> GPUBudget:
        """Each GPU's memory for the model at `tp` and `length`."""
        stages = self.limits.stages
        return GPUBudget(
            tensor_parallel_size=tp,
            max_model_len=length,
            budget_bytes=int(gpus.memory_bytes * self.limits.gpu_memory_utilization),
            weights_bytes=-(-self.weights_bytes() // (tp * stages)),
            kv_bytes=kv_cache.sequence_bytes(self.facts, self.limits, tp, length),
            kv_bytes_per_token=kv_cache.kv_bytes_per_token(self.facts, self.limits, tp),
            overhead_bytes=self.overhead_bytes,
        )

    def largest_max_model_len(self, gpus: GPUs, tp: int) -> int:
        """The longest max_model_len (a round number) that fits at `tp`; 0 when none does."""
        longest = self.facts.max_context or self.limits.max_model_len or 0
        full = self.budget(gpus, tp, max(longest, 1))
        fixed = kv_cache.fixed_bytes(self.facts, self.limits, tp, max(longest, 1))
        room = full.room_bytes - fixed
        if room <= 0:
            return 0
        tokens = room // full.kv_bytes_per_token if full.kv_bytes_per_token else longest
        if self.facts.max_context is not None:
            tokens = min(tokens, self.facts.max_context)
        return _round_down(tokens)

    def min_memory_mib(self, tp: int) -> int | None:
        """The smallest GPU (MiB) that holds the model at `tp` with one max_model_len sequence."""
        length = self.max_model_len()
        if isinstance(length, Refusal):
            return None
        needed = self.budget(GPUs(tp, 0), tp, length).needed_bytes
        return math.ceil(needed / self.limits.gpu_memory_utilization / MIB)

    # --- the answers ----------------------------------------------------------------------

    def _sized(self, budget: GPUBudget, gpus: GPUs) -> Sized:
        sequences = budget.room_bytes // max(budget.kv_bytes, 1)
        tokens = (
            f"KV cache for {budget.room_bytes // budget.kv_bytes_per_token} tokens, "
            if budget.kv_bytes_per_token
            else "KV cache for "
        )
        return Sized(
            budget.tensor_parallel_size,
            f"{self.facts.name} at tensorParallelSize={budget.tensor_parallel_size} fits "
            f"{gpus.product or 'GPUs'} of {gib(gpus.memory_bytes)}: {budget.describe()}; "
            f"{tokens}{sequences} sequence{'s' if sequences > 1 else ''} of "
            f"{budget.max_model_len}.",
            budget,
        )

    def _too_long(self, budget: GPUBudget, largest: int, opening: str) -> Refusal:
        return Refusal(
            "MaxModelLenTooLong",
            f"{opening}: {budget.describe()}. The largest max_model_len that fits is {largest}: "
            f"set spec.engineArgs.max_model_len to at most {largest}, or use more or larger "
            "GPUs.",
            largest_max_model_len=largest,
        )

    def check_memory(self, gpus: GPUs, tp: int) -> Sized | Refusal:
        """Whether one max_model_len sequence fits beside the weights at `tp`."""
        length = self.max_model_len()
        if isinstance(length, Refusal):
            return length
        budget = self.budget(gpus, tp, length)
        if budget.fits:
            return self._sized(budget, gpus)
        largest = self.largest_max_model_len(gpus, tp)
        name = self.facts.name
        if largest == 0:
            return Refusal(
                "InsufficientGPUMemory",
                f"{name} does not fit GPUs of {gib(gpus.memory_bytes)} at "
                f"tensorParallelSize={tp}: {budget.describe()}.",
            )
        opening = (
            f"{name} at tensorParallelSize={tp} on {gib(gpus.memory_bytes)} GPUs has no room "
            f"for max_model_len {length}"
        )
        return self._too_long(budget, largest, opening)

    def fit(self, gpus: GPUs, tp: int) -> Sized | Refusal:
        """An explicit tensorParallelSize on these GPUs: the numbers, or the sizes that would
        work."""
        invalid = check_split(self.facts, tp)
        if invalid:
            return invalid
        stages = self.pipeline_parallel_size
        if tp * stages > gpus.count:
            pp = f" x pipeline_parallel_size={stages}" if stages > 1 else ""
            return Refusal(
                "NotEnoughGPUs",
                f"tensorParallelSize={tp}{pp} needs {tp * stages} GPUs on one node; the node "
                f"has {gpus.describe()}.",
                valid_sizes=valid_tensor_parallel_sizes(self.facts, gpus.count // stages),
            )
        result = self.check_memory(gpus, tp)
        if isinstance(result, Sized) or result.reason not in MEMORY_REASONS:
            return result
        fitting = tuple(
            size
            for size in valid_tensor_parallel_sizes(self.facts, gpus.count // stages)
            if isinstance(self.check_memory(gpus, size), Sized)
        )
        if not fitting:
            return result
        also = f" On {gpus.describe()}, tensorParallelSize {or_list(fitting)} fits."
        return Refusal(result.reason, result.message + also, fitting, result.largest_max_model_len)

    def choose(self, gpus: GPUs) -> Sized | Refusal:
        """`auto`: the smallest TP vLLM can split the model over that fits, up to the node's
        GPUs (divided by the pipeline stages)."""
        facts = self.facts
        sizes = valid_tensor_parallel_sizes(facts, gpus.count // self.pipeline_parallel_size)
        if not sizes:
            return Refusal("NotEnoughGPUs", f"The node has no GPU for {facts.name}.")
        for tp in sizes:
            result = self.check_memory(gpus, tp)
            if isinstance(result, Sized) or result.reason not in MEMORY_REASONS:
                return result
        largest = sizes[-1]
        length = self.max_model_len()
        if isinstance(length, Refusal):
            return length
        budget = self.budget(gpus, largest, length)
        longest = self.largest_max_model_len(gpus, largest)
        if longest:
            opening = (
                f"{facts.name} does not fit {gpus.describe()} with max_model_len {length} at any "
                f"tensorParallelSize up to {largest}; at tensorParallelSize={largest}"
            )
            return self._too_long(budget, longest, opening)
        return Refusal(
            "ModelTooLarge",
            f"{facts.name} ({gib(self.weights_bytes())} of weights) does not fit "
            f"{gpus.describe()}: at tensorParallelSize={largest} each GPU needs "
            f"{gib(budget.weights_bytes)} of weights + {gib(budget.overhead_bytes)} overhead "
            f"before any KV cache, of {gib(budget.budget_bytes)} usable. Use a node with more or "
            "larger GPUs.",
        )
