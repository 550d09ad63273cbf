"""Sizing a model to GPUs from its facts: the tensor-parallel sizes and max_model_len vLLM can run.

Pure arithmetic over `ModelFacts`; the rules restate vLLM's own checks (docs/sizing.md):
- the attention heads and the MLP split evenly over TP GPUs, and the KV heads either split
  evenly or each is replicated on a whole number of GPUs;
- each GPU holds weights / TP, the KV cache of at least one max_model_len sequence (KV heads
  divided by TP, at least one per GPU) and an overhead allowance, all within
  gpu_memory_utilization of its memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .model_facts import DTYPE_BYTES, GIB, ModelFacts

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# Per GPU, beside the weights and the KV cache, within gpu_memory_utilization: the activations of
# vLLM's profiling step, CUDA graphs, the CUDA context and NCCL buffers.
OVERHEAD_BYTES = 2 * GIB
# A suggested max_model_len is rounded down to a multiple of this (of KV blocks below it).
ROUND_TOKENS = 1024
KV_BLOCK_TOKENS = 16
FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")


class EngineArgError(ValueError):
    """An engine argument that sizing reads has a value it cannot use."""


def pipeline_parallel_size(engine_args: Mapping[str, Any]) -> int:
    """engineArgs.pipeline_parallel_size (default 1): a pod runs TP x PP GPUs."""
    value = engine_args.get("pipeline_parallel_size")
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EngineArgError(
            f"engineArgs.pipeline_parallel_size must be a positive integer, not {value!r}"
        )
    return value


@dataclass(frozen=True)
class EngineLimits:
    """The vLLM engine arguments that decide how much GPU memory a replica needs."""

    max_model_len: int | None = None  # None: the model's own max context
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    pipeline_parallel_size: int = 1  # the layers split into stages, each on TP GPUs

    @classmethod
    def from_engine_args(cls, engine_args: Mapping[str, Any]) -> EngineLimits:
        """Read max_model_len, gpu_memory_utilization, dtype and kv_cache_dtype."""
        max_len = engine_args.get("max_model_len")
        if max_len is not None:
            if isinstance(max_len, str) and max_len.strip().isdigit():
                max_len = int(max_len)
            if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
                raise EngineArgError(
                    f"engineArgs.max_model_len must be a positive integer, not {max_len!r}"
                )
        utilization = engine_args.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION)
        try:
            utilization = float(utilization)
        except (TypeError, ValueError) as err:
            raise EngineArgError(
                f"engineArgs.gpu_memory_utilization must be a number, not {utilization!r}"
            ) from err
        if not 0 < utilization <= 1:
            raise EngineArgError(
                f"engineArgs.gpu_memory_utilization must be in (0, 1], not {utilization:g}"
            )
        return cls(
            max_model_len=max_len,
            gpu_memory_utilization=utilization,
            dtype=str(engine_args.get("dtype") or "auto"),
            kv_cache_dtype=str(engine_args.get("kv_cache_dtype") or "auto"),
            pipeline_parallel_size=pipeline_parallel_size(engine_args),
        )

    def compute_dtype_bytes(self, facts: ModelFacts) -> int:
        """Bytes per element of the dtype vLLM runs the model in."""
        if self.dtype != "auto":
            return DTYPE_BYTES.get(self.dtype, 2)
        # vLLM runs float32 checkpoints in 16 bits unless told otherwise.
        return min(DTYPE_BYTES.get(facts.dtype or "", 2), 2)

    def kv_dtype_bytes(self, facts: ModelFacts) -> int:
        if self.kv_cache_dtype in FP8_KV_DTYPES:
            return 1
        if self.kv_cache_dtype != "auto":
            return DTYPE_BYTES.get(self.kv_cache_dtype, 2)
        return self.compute_dtype_bytes(facts)


@dataclass(frozen=True)
class GPUs:
    """The GPUs of one node that a replica may use: how many and how much memory each."""

    count: int
    memory_bytes: int
    product: str | None = None

    @classmethod
    def from_mib(cls, count: int, memory_mib: int, product: str | None = None) -> GPUs:
        """From the GPU Feature Discovery labels: nvidia.com/gpu.memory is in MiB."""
        return cls(count, memory_mib * 1024**2, product)

    def describe(self) -> str:
        return f"{self.count} x {self.product or 'GPU'} ({_gib(self.memory_bytes)} each)"


@dataclass(frozen=True)
class MemoryPlan:
    """Where each GPU's memory goes for one tensor-parallel size and max_model_len."""

    tensor_parallel_size: int
    max_model_len: int
    budget_bytes: int  # gpu_memory_utilization x the GPU's memory
    weights_bytes: int  # per GPU
    kv_bytes_per_token: int  # per GPU
    overhead_bytes: int

    @property
    def kv_bytes(self) -> int:
        """The KV cache of one max_model_len sequence, per GPU."""
        return self.kv_bytes_per_token * self.max_model_len

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.budget_bytes

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of KV cache the GPU has room for beside the weights (0 when they do not fit)."""
        room = self.budget_bytes - self.weights_bytes - self.overhead_bytes
        return max(room, 0) // self.kv_bytes_per_token

    def describe(self) -> str:
        return (
            f"per GPU {_gib(self.weights_bytes)} of weights + {_gib(self.kv_bytes)} of KV cache "
            f"for one {self.max_model_len}-token sequence + {_gib(self.overhead_bytes)} "
            f"overhead = {_gib(self.needed_bytes)}, of {_gib(self.budget_bytes)} usable"
        )


@dataclass(frozen=True)
class Sized:
    """A tensor-parallel size and max_model_len that fit, and the numbers that show it."""

    plan: MemoryPlan
    message: str

    @property
    def tensor_parallel_size(self) -> int:
        return self.plan.tensor_parallel_size

    @property
    def max_model_len(self) -> int:
        return self.plan.max_model_len


@dataclass(frozen=True)
class Refusal:
    """Why the model cannot run so; the message names the numbers and what would work."""

    reason: str
    message: str
    valid_sizes: tuple[int, ...] = ()
    largest_max_model_len: int | None = None


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _or_list(values: tuple[int, ...]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# --- how vLLM splits a model ------------------------------------------------------------------


def split_problem(facts: ModelFacts, tp: int) -> str | None:
    """Why vLLM cannot split the model over `tp` GPUs, or None when it can."""
    if facts.attention_heads % tp:
        return f"{facts.attention_heads} attention heads do not divide by {tp}"
    kv = facts.kv_heads
    if not facts.kv_latent_dim and ((kv >= tp and kv % tp) or (kv < tp and tp % kv)):
        return (
            f"{kv} KV heads can neither be divided by {tp} nor each replicated on a whole "
            f"number of the {tp} GPUs"
        )
    if facts.experts is None and facts.intermediate_size and facts.intermediate_size % tp:
        return f"its MLP of {facts.intermediate_size} does not divide by {tp}"
    return None


def valid_tensor_parallel_sizes(facts: ModelFacts, up_to: int | None = None) -> tuple[int, ...]:
    """Every TP vLLM can split the model over, smallest first, at most `up_to`."""
    limit = facts.attention_heads if up_to is None else min(up_to, facts.attention_heads)
    return tuple(tp for tp in range(1, limit + 1) if split_problem(facts, tp) is None)


def _shape(facts: ModelFacts) -> str:
    parts = [f"{facts.attention_heads} attention heads", f"{facts.kv_heads} KV heads"]
    if facts.experts is None and facts.intermediate_size:
        parts.append(f"an MLP of {facts.intermediate_size}")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def kv_heads_per_gpu(facts: ModelFacts, tp: int) -> int:
    """KV heads each GPU caches: split when there are at least TP of them, else one replica."""
    return max(facts.kv_heads // tp, 1)


def kv_elements_per_token(facts: ModelFacts, tp: int) -> int:
    """KV cache elements per token on each GPU; a latent-attention cache is whole on every GPU."""
    if facts.kv_latent_dim:
        return facts.layers * facts.kv_latent_dim
    return 2 * facts.layers * kv_heads_per_gpu(facts, tp) * facts.head_dim


# --- memory -----------------------------------------------------------------------------------


def _weights_bytes(facts: ModelFacts, limits: EngineLimits) -> int | None:
    """The weights in the dtype vLLM loads them in (a quantized checkpoint as it is)."""
    recast = limits.dtype != "auto" or facts.dtype == "float32"
    if facts.quantization is None and facts.parameters and recast:
        return facts.parameters * limits.compute_dtype_bytes(facts)
    return facts.weights_bytes


def _max_model_len(facts: ModelFacts, limits: EngineLimits) -> int | Refusal:
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


def plan_memory(
    facts: ModelFacts,
    limits: EngineLimits,
    gpus: GPUs,
    tp: int,
    max_model_len: int,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> MemoryPlan:
    """Each GPU's memory for the model at `tp` and `max_model_len` (weights must be known)."""
    weights = _weights_bytes(facts, limits)
    if weights is None:
        raise ValueError(f"the weights of {facts.name} are of unknown size")
    # Pipeline stages split the layers, and with them the weights and the KV cache.
    stages = limits.pipeline_parallel_size
    per_token = -(-kv_elements_per_token(facts, tp) // stages)
    return MemoryPlan(
        tensor_parallel_size=tp,
        max_model_len=max_model_len,
        budget_bytes=int(gpus.memory_bytes * limits.gpu_memory_utilization),
        weights_bytes=-(-weights // (tp * stages)),
        kv_bytes_per_token=per_token * limits.kv_dtype_bytes(facts),
        overhead_bytes=overhead_bytes,
    )


def _round_down(tokens: int) -> int:
    step = ROUND_TOKENS if tokens >= ROUND_TOKENS else KV_BLOCK_TOKENS
    return tokens // step * step


def largest_max_model_len(
    facts: ModelFacts,
    limits: EngineLimits,
    gpus: GPUs,
    tp: int,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> int:
    """The longest max_model_len (a round number) that fits at `tp`; 0 when the weights do not."""
    plan = plan_memory(facts, limits, gpus, tp, 1, overhead_bytes)
    tokens = plan.kv_cache_tokens
    if facts.max_context is not None:
        tokens = min(tokens, facts.max_context)
    return _round_down(tokens)


def _unknown_weights(facts: ModelFacts) -> Refusal:
    return Refusal(
        "ModelSizeUnknown",
        f"The size of {facts.name}'s weights is unknown (no safetensors index or header was "
        "found): set spec.modelSizeGiB.",
    )


def _sized(plan: MemoryPlan, facts: ModelFacts, gpus: GPUs) -> Sized:
    sequences = plan.kv_cache_tokens // plan.max_model_len
    return Sized(
        plan,
        f"{facts.name} at tensorParallelSize={plan.tensor_parallel_size} fits "
        f"{gpus.product or 'GPUs'} of {_gib(gpus.memory_bytes)}: {plan.describe()}; KV cache "
        f"for {plan.kv_cache_tokens} tokens, {sequences} sequence{'s' if sequences > 1 else ''} "
        f"of {plan.max_model_len}.",
    )


_MEMORY_REASONS = ("MaxModelLenTooLong", "InsufficientGPUMemory")


def _too_long(plan: MemoryPlan, largest: int, opening: str) -> Refusal:
    return Refusal(
        "MaxModelLenTooLong",
        f"{opening}: {plan.describe()}. The largest max_model_len that fits is {largest}: set "
        f"spec.engineArgs.max_model_len to at most {largest}, or use more or larger GPUs.",
        largest_max_model_len=largest,
    )


def check_max_model_len(
    facts: ModelFacts,
    limits: EngineLimits,
    gpus: GPUs,
    tp: int,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> Sized | Refusal:
    """Whether the KV cache of one max_model_len sequence fits beside the weights at `tp`."""
    length = _max_model_len(facts, limits)
    if isinstance(length, Refusal):
        return length
    if _weights_bytes(facts, limits) is None:
        return _unknown_weights(facts)
    plan = plan_memory(facts, limits, gpus, tp, length, overhead_bytes)
    if plan.fits:
        return _sized(plan, facts, gpus)
    largest = largest_max_model_len(facts, limits, gpus, tp, overhead_bytes)
    if largest == 0:
        return Refusal(
            "InsufficientGPUMemory",
            f"{facts.name} does not fit GPUs of {_gib(gpus.memory_bytes)} at "
            f"tensorParallelSize={tp}: {plan.describe()}.",
        )
    opening = (
        f"{facts.name} at tensorParallelSize={tp} on {_gib(gpus.memory_bytes)} GPUs has no room "
        f"for max_model_len {length}"
    )
    return _too_long(plan, largest, opening)


def check_split(facts: ModelFacts, tp: int) -> Refusal | None:
    """Whether vLLM can split the model over `tp` GPUs at all, on any node; else the sizes that
    it can."""
    problem = split_problem(facts, tp)
    if problem is None:
        return None
    sizes = valid_tensor_parallel_sizes(facts)
    return Refusal(
        "TensorParallelSizeInvalid",
        f"{facts.name} has {_shape(facts)}: vLLM cannot split it over {tp} GPUs ({problem}). "
        f"Use tensorParallelSize {_or_list(sizes)}.",
        valid_sizes=sizes,
    )


def check_context(facts: ModelFacts, limits: EngineLimits) -> Refusal | None:
    """A max_model_len above the model's own context, which vLLM refuses on any GPU."""
    length = _max_model_len(facts, limits)
    return length if isinstance(length, Refusal) and length.largest_max_model_len else None


def check_tensor_parallel_size(
    facts: ModelFacts,
    limits: EngineLimits,
    gpus: GPUs,
    tp: int,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> Sized | Refusal:
    """An explicit tensorParallelSize: refused with the numbers and the sizes that would work."""
    invalid = check_split(facts, tp)
    if invalid:
        return invalid
    stages = limits.pipeline_parallel_size
    if tp * stages > gpus.count:
        pp = f" x pipeline_parallel_size={stages}" if stages > 1 else ""
        return Refusal(
            "NotEnoughGPUs",
            f"tensorParallelSize={tp}{pp} needs {tp * stages} GPUs on one node; the node has "
            f"{gpus.describe()}.",
            valid_sizes=valid_tensor_parallel_sizes(facts, gpus.count // stages),
        )
    result = check_max_model_len(facts, limits, gpus, tp, overhead_bytes)
    if isinstance(result, Sized) or result.reason not in _MEMORY_REASONS:
        return result
    fitting = tuple(
        size
        for size in valid_tensor_parallel_sizes(facts, gpus.count // stages)
        if isinstance(check_max_model_len(facts, limits, gpus, size, overhead_bytes), Sized)
    )
    if not fitting:
        return result
    also = f" On {gpus.describe()}, tensorParallelSize {_or_list(fitting)} fits."
    return Refusal(result.reason, result.message + also, fitting, result.largest_max_model_len)


def choose_tensor_parallel_size(
    facts: ModelFacts,
    limits: EngineLimits,
    gpus: GPUs,
    overhead_bytes: int = OVERHEAD_BYTES,
) -> Sized | Refusal:
    """`auto`: the smallest TP vLLM can split the model over that fits, up to the node's GPUs
    (divided by the pipeline stages)."""
    sizes = valid_tensor_parallel_sizes(facts, gpus.count // limits.pipeline_parallel_size)
    if not sizes:
        return Refusal("NotEnoughGPUs", f"The node has no GPU for {facts.name}.")
    for tp in sizes:
        result = check_max_model_len(facts, limits, gpus, tp, overhead_bytes)
        if isinstance(result, Sized) or result.reason not in _MEMORY_REASONS:
            return result
    largest = sizes[-1]
    length = _max_model_len(facts, limits)
    if isinstance(length, Refusal):
        return length
    plan = plan_memory(facts, limits, gpus, largest, length, overhead_bytes)
    longest = largest_max_model_len(facts, limits, gpus, largest, overhead_bytes)
    if longest:
        opening = (
            f"{facts.name} does not fit {gpus.describe()} with max_model_len {length} at any "
            f"tensorParallelSize up to {largest}; at tensorParallelSize={largest}"
        )
        return _too_long(plan, longest, opening)
    return Refusal(
        "ModelTooLarge",
        f"{facts.name} ({_gib(_weights_bytes(facts, limits) or 0)} of weights) does not fit "
        f"{gpus.describe()}: at tensorParallelSize={largest} each GPU needs "
        f"{_gib(plan.weights_bytes)} of weights + {_gib(plan.overhead_bytes)} overhead before any "
        f"KV cache, of {_gib(plan.budget_bytes)} usable. Use a node with more or larger GPUs.",
    )
