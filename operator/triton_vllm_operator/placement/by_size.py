"""Memory plans without the model's facts: by spec.modelSizeGiB alone, or by nothing at all
(then only an explicit tensorParallelSize is placed, on GPU counts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .budget import MIB, GPUs, Refusal, Sized

# Weights may take at most this share of the GPUs' memory; the rest is vLLM's KV cache,
# activations and CUDA graphs. 0.7 puts an 8B bf16 model (16 GiB) on one 24 GiB GPU only
# barely not, and a 70B one (140 GiB) on 4 x 80 GiB.
WEIGHT_SHARE = 0.7


def _not_enough_gpus(tp: int, stages: int, gpus: GPUs) -> Refusal:
    needed = tp * stages
    return Refusal(
        "NotEnoughGPUs",
        f"{gpus.count} GPUs < the {needed} GPUs a pod needs: lower spec.tensorParallelSize, or "
        "add a node with more GPUs.",
    )


@dataclass(frozen=True)
class SizePlan:
    """Sizes the model by the weights' size: they may fill WEIGHT_SHARE of the GPUs' memory;
    `auto` takes the smallest power of two that holds them."""

    size_gib: float
    pipeline_parallel_size: int = 1
    nodes_per_replica: int = 1  # the weights split over this many nodes' GPUs too

    @property
    def needs_memory_label(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{self.size_gib:g} GiB of weights"

    def _needed_mib(self) -> float:
        return self.size_gib * 1024 / WEIGHT_SHARE

    def min_memory_mib(self, tp: int) -> int:
        """The smallest GPU (MiB) whose share holds the weights at `tp`."""
        stages = self.pipeline_parallel_size * self.nodes_per_replica
        return math.ceil(self._needed_mib() / (tp * stages))

    def fit(self, gpus: GPUs, tp: int) -> Sized | Refusal:
        stages = self.pipeline_parallel_size
        if tp * stages > gpus.count:
            return _not_enough_gpus(tp, stages, gpus)
        memory_mib = gpus.memory_bytes // MIB
        if memory_mib < self.min_memory_mib(tp):
            return Refusal(
                "InsufficientGPUMemory",
                f"{tp * stages} x {memory_mib // 1024} GiB is too little for "
                f"{self.size_gib:g} GiB of weights.",
            )
        return Sized(
            tp,
            f"{self.size_gib:g} GiB of weights fit {tp * stages} GPUs of {memory_mib // 1024} GiB "
            f"in at most {WEIGHT_SHARE:.0%} of their memory.",
        )

    def choose(self, gpus: GPUs) -> Sized | Refusal:
        stages = self.pipeline_parallel_size
        memory_mib = gpus.memory_bytes // MIB
        tp = 1
        while memory_mib < self.min_memory_mib(tp):
            tp *= 2
        if tp * stages > gpus.count:
            have = gpus.count * memory_mib // 1024
            return Refusal(
                "InsufficientGPUMemory",
                f"{self.describe()} need {tp * stages} GPUs of {memory_mib // 1024} GiB, the "
                f"node has {gpus.count} ({have} GiB).",
            )
        return self.fit(gpus, tp)


@dataclass(frozen=True)
class UnsizedPlan:
    """No size known: an explicit tensorParallelSize is placed on GPU counts, `auto` is not."""

    reason: str  # ModelSizeUnknown, or the failed lookup's reason
    message: str  # why the size is unknown, and what to set
    pipeline_parallel_size: int = 1

    @property
    def needs_memory_label(self) -> bool:
        return False

    def describe(self) -> str:
        return "a model of unknown size"

    def min_memory_mib(self, tp: int) -> None:
        return None

    def fit(self, gpus: GPUs, tp: int) -> Sized | Refusal:
        if tp * self.pipeline_parallel_size > gpus.count:
            return _not_enough_gpus(tp, self.pipeline_parallel_size, gpus)
        return Sized(tp, "")

    def choose(self, gpus: GPUs) -> Refusal:
        return Refusal(self.reason, self.message)
