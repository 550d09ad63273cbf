"""The vLLM engine arguments placement reads: parallelism and what decides the memory a replica
needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model_facts import DTYPE_BYTES, ModelFacts

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# vLLM's default batch on H100-class GPUs; with async scheduling two batches are in flight, and
# sliding-window layers keep their tokens beside the window (vLLM's max_in_flight_tokens).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
IN_FLIGHT_BATCHES = 2
FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")
# The engine arguments that change the memory a replica needs or the GPUs a pod gets: a change to
# one of them places the model again.
MEMORY_ARGS = (
    "max_model_len",
    "gpu_memory_utilization",
    "dtype",
    "kv_cache_dtype",
    "quantization",
    "pipeline_parallel_size",
    "max_num_batched_tokens",
    "mamba_ssm_cache_dtype",
    "cpu_offload_gb",
)


class EngineArgError(ValueError):
    """An engine argument that placement reads has a value it cannot use."""


def _positive_int(engine_args: Mapping[str, Any], name: str) -> int | None:
    value = engine_args.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EngineArgError(f"engineArgs.{name} must be a positive integer, not {value!r}")
    return value


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
    nodes_per_replica: int = 1  # more stages, one per node (spec.nodesPerReplica)
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS

    @classmethod
    def from_engine_args(cls, engine_args: Mapping[str, Any]) -> EngineLimits:
        """Read the arguments above from spec.engineArgs; EngineArgError for unusable values."""
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
        batched = _positive_int(engine_args, "max_num_batched_tokens")
        return cls(
            max_model_len=_positive_int(engine_args, "max_model_len"),
            gpu_memory_utilization=utilization,
            dtype=str(engine_args.get("dtype") or "auto"),
            kv_cache_dtype=str(engine_args.get("kv_cache_dtype") or "auto"),
            pipeline_parallel_size=pipeline_parallel_size(engine_args),
            max_num_batched_tokens=batched or DEFAULT_MAX_NUM_BATCHED_TOKENS,
        )

    @property
    def stages(self) -> int:
        """The pipeline stages the layers, the weights and the cache are split into."""
        return self.pipeline_parallel_size * self.nodes_per_replica

    @property
    def in_flight_tokens(self) -> int:
        """Tokens scheduled but not yet settled: what a sliding-window layer keeps beyond its
        window."""
        return IN_FLIGHT_BATCHES * self.max_num_batched_tokens

    def compute_dtype_bytes(self, facts: ModelFacts) -> int:
        """Bytes per element of the dtype vLLM runs the model in."""
        if self.dtype != "auto":
            return DTYPE_BYTES.get(self.dtype, 2)
        # vLLM runs float32 checkpoints in 16 bits unless told otherwise.
        return min(DTYPE_BYTES.get(facts.dtype or "", 2), 2)

    def kv_dtype_bytes(self, facts: ModelFacts) -> int:
        """Bytes per element of the KV cache."""
        if self.kv_cache_dtype in FP8_KV_DTYPES:
            return 1
        if self.kv_cache_dtype != "auto":
            return DTYPE_BYTES.get(self.kv_cache_dtype, 2)
        return self.compute_dtype_bytes(facts)
