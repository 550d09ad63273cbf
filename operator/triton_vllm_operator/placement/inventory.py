"""The GPU inventory: what each node offers in GPUs (class, count, memory, free capacity) and
whether a model's pods may land on it. Pure: reads Node and Pod dicts as the API returns them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api import Toleration, TritonVLLMModelSpec
from .budget import GPUs
from .engine import pipeline_parallel_size

PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, from GPU Feature Discovery
COUNT_LABEL = "nvidia.com/gpu.count"


@dataclass(frozen=True)
class NodeGPUs:
    """What one node offers in GPUs, and whether a model's pods may land on it."""

    name: str
    allocatable: int
    in_use: int
    product: str | None
    memory_mib: int | None
    labels: Mapping[str, str]
    unusable_reason: str | None = None  # NotReady, cordoned, untolerated taint

    @property
    def free(self) -> int:
        return max(self.allocatable - self.in_use, 0)

    @property
    def gpus(self) -> GPUs:
        return GPUs.from_mib(self.allocatable, self.memory_mib or 0, self.product)

    def describe(self) -> str:
        product = self.product or "unlabelled GPU"
        memory = f", {self.memory_mib // 1024} GiB each" if self.memory_mib else ""
        return f"{self.name} ({self.allocatable} x {product}{memory}, {self.free} free)"


def _quantity_int(value: Any) -> int:
    """Whole units of an extended-resource quantity (GPUs are integers)."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def _tolerates(tolerations: Iterable[Toleration], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        if tol.effect and tol.effect != taint.get("effect"):
            continue
        if tol.key is None and tol.operator == "Exists":
            return True
        if tol.key != taint.get("key"):
            continue
        if tol.operator == "Exists" or tol.value == taint.get("value"):
            return True
    return False


def pod_tolerations(spec: TritonVLLMModelSpec) -> list[Toleration]:
    """The GPU taint is always tolerated; the user's tolerations come after."""
    gpu = Toleration(key=spec.gpu.resource_name, operator="Exists", effect="NoSchedule")
    return [gpu, *spec.tolerations]


def gpus_per_pod(spec: TritonVLLMModelSpec, tensor_parallel_size: int) -> int:
    """The GPUs one pod needs on its node: TP x engineArgs.pipeline_parallel_size."""
    return tensor_parallel_size * pipeline_parallel_size(spec.engine_args)


def _gpus_in_use(pods: Iterable[Mapping[str, Any]], resource: str) -> dict[str, int]:
    used: dict[str, int] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"].get("containers", []):
            resources = container.get("resources") or {}
            amount = (resources.get("limits") or {}).get(resource) or (
                resources.get("requests") or {}
            ).get(resource)
            used[node] = used.get(node, 0) + _quantity_int(amount or 0)
    return used


def _unusable_reason(node: Mapping[str, Any], tolerations: list[Toleration]) -> str | None:
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if not ready:
        return "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        return "cordoned"
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(
            tolerations, taint
        ):
            return f"taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    return None


def inventory(
    spec: TritonVLLMModelSpec,
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
) -> list[NodeGPUs]:
    """Every node with at least one GPU of the spec's resource, as the model's pods see it.

    `pods` should leave out the model's own pods, so a running model can be placed again
    on the GPUs it already holds.
    """
    resource = spec.gpu.resource_name
    used = _gpus_in_use(pods, resource)
    tolerations = pod_tolerations(spec)
    result = []
    for node in nodes:
        allocatable = _quantity_int(node.get("status", {}).get("allocatable", {}).get(resource, 0))
        if allocatable <= 0:
            continue
        labels = node.get("metadata", {}).get("labels") or {}
        memory = labels.get(MEMORY_LABEL)
        result.append(
            NodeGPUs(
                name=node["metadata"]["name"],
                allocatable=allocatable,
                in_use=used.get(node["metadata"]["name"], 0),
                product=labels.get(PRODUCT_LABEL),
                memory_mib=int(memory) if memory and memory.isdigit() else None,
                labels=labels,
                unusable_reason=_unusable_reason(node, tolerations),
            )
        )
    return sorted(result, key=lambda n: n.name)
