"""The numbers a sizing answer carries: the GPUs of a node, where each GPU's memory goes, and
the answer itself (it fits, with the numbers; or why not, with what would work)."""

from __future__ import annotations

from dataclasses import dataclass

from ..model_facts import GIB

MIB = 1024**2


def gib(n: int) -> str:
    """Bytes as GiB for messages."""
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class GPUs:
    """The GPUs of one node that a replica may use: how many and how much memory each."""

    count: int
    memory_bytes: int
    product: str | None = None

    @classmethod
    def from_mib(cls, count: int, memory_mib: int, product: str | None = None) -> GPUs:
        """From the GPU Feature Discovery labels: nvidia.com/gpu.memory is in MiB."""
        return cls(count, memory_mib * MIB, product)

    def describe(self) -> str:
        return f"{self.count} x {self.product or 'GPU'} ({gib(self.memory_bytes)} each)"


@dataclass(frozen=True)
class GPUBudget:
    """Where each GPU's memory goes for one tensor-parallel size and max_model_len."""

    tensor_parallel_size: int
    max_model_len: int
    budget_bytes: int  # gpu_memory_utilization x the GPU's memory
    weights_bytes: int  # per GPU
    kv_bytes: int  # per GPU: the KV cache and state of one max_model_len sequence
    kv_bytes_per_token: int  # per GPU, of the layers that cache every token
    overhead_bytes: int

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.budget_bytes

    @property
    def room_bytes(self) -> int:
        """What the GPU has for the KV cache beside the weights and the overhead."""
        return max(self.budget_bytes - self.weights_bytes - self.overhead_bytes, 0)

    def describe(self) -> str:
        return (
            f"per GPU {gib(self.weights_bytes)} of weights + {gib(self.kv_bytes)} of KV cache "
            f"for one {self.max_model_len}-token sequence + {gib(self.overhead_bytes)} "
            f"overhead = {gib(self.needed_bytes)}, of {gib(self.budget_bytes)} usable"
        )


@dataclass(frozen=True)
class Sized:
    """A tensor-parallel size that fits a node's GPUs, and the message that shows it."""

    tensor_parallel_size: int
    message: str
    budget: GPUBudget | None = None  # None where the plan has no per-GPU numbers


@dataclass(frozen=True)
class Refusal:
    """Why the model cannot run so; the message names the numbers and what would work."""

    reason: str
    message: str
    valid_sizes: tuple[int, ...] = ()
    largest_max_model_len: int | None = None


# The refusals an explicit tensorParallelSize overrides: the estimate of memory, not the split
# rules or the GPU count.
MEMORY_REASONS = ("MaxModelLenTooLong", "InsufficientGPUMemory", "ModelTooLarge")
