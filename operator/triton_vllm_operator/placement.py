"""GPU placement: (spec, nodes, pods) -> a tensor-parallel size and where it fits, or why not.

Pure: reads plain Node and Pod dicts as the API returns them, talks to nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .api import Toleration, TritonVLLMModelSpec
from .sizing import pipeline_parallel_size

PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, from GPU Feature Discovery
COUNT_LABEL = "nvidia.com/gpu.count"
# Weights may take at most this share of the GPUs' memory; the rest is vLLM's KV cache,
# activations and CUDA graphs. 0.7 puts an 8B bf16 model (16 GiB) on one 24 GiB GPU only
# barely not, and a 70B one (140 GiB) on 4 x 80 GiB.
WEIGHT_SHARE = 0.7


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

    def describe(self) -> str:
        product = self.product or "unlabelled GPU"
        memory = f", {self.memory_mib // 1024} GiB each" if self.memory_mib else ""
        return f"{self.name} ({self.allocatable} x {product}{memory}, {self.free} free)"


@dataclass(frozen=True)
class Placement:
    """A tensor-parallel size and the nodes that can run a replica of it."""

    tensor_parallel_size: int
    nodes: tuple[str, ...]
    replicas_that_fit_now: int
    min_memory_mib: int | None  # a per-GPU memory floor the pods must be pinned to
    message: str


@dataclass(frozen=True)
class Unplaceable:
    """No node can run a replica; the message says what the cluster lacks or what to change."""

    reason: str
    message: str


@dataclass(frozen=True)
class _Candidate:
    node: NodeGPUs
    tensor_parallel_size: int


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


def gpus_per_pod(spec: TritonVLLMModelSpec, tensor_parallel_size: int) -> int:
    """The GPUs one pod needs on its node: TP x engineArgs.pipeline_parallel_size."""
    return tensor_parallel_size * pipeline_parallel_size(spec.engine_args)


def missing_product(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs]) -> Unplaceable | None:
    """spec.gpu.product that no GPU node (usable or not) carries: said first, with the products
    the nodes do have, since excluding every node one by one hides it."""
    product = spec.gpu.product
    if not product or any(node.product == product for node in gpus):
        return None
    products = sorted({node.product for node in gpus if node.product})
    have = ", ".join(products) if products else f"none labelled {PRODUCT_LABEL}"
    return Unplaceable(
        "NoNodeFits",
        f"No node has {PRODUCT_LABEL}={product} (nodes have: {have}). Set spec.gpu.product to "
        "one of those, or add nodes with that GPU.",
    )


def _excluded_by_spec(spec: TritonVLLMModelSpec, node: NodeGPUs) -> str | None:
    if node.unusable_reason:
        return node.unusable_reason
    if spec.gpu.product and node.product != spec.gpu.product:
        return f"product {node.product or 'unlabelled'}"
    if spec.gpu.min_memory_gi_b and (node.memory_mib or 0) < spec.gpu.min_memory_gi_b * 1024:
        return f"GPU memory {(node.memory_mib or 0) // 1024} GiB < {spec.gpu.min_memory_gi_b} GiB"
    for key, value in spec.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    return None


def _auto_size(spec: TritonVLLMModelSpec, node: NodeGPUs, size_gib: float) -> _Candidate | str:
    """The TP `auto` picks on this node for `size_gib` of weights, or why the node cannot."""
    if not node.memory_mib:
        return f"no {MEMORY_LABEL} label to size {size_gib:g} GiB of weights"
    needed_mib = size_gib * 1024 / WEIGHT_SHARE
    tp = 1
    while gpus_per_pod(spec, tp) * node.memory_mib < needed_mib:
        tp *= 2
    if gpus_per_pod(spec, tp) > node.allocatable:
        have = node.allocatable * node.memory_mib // 1024
        return (
            f"needs {gpus_per_pod(spec, tp)} GPUs of {node.memory_mib // 1024} GiB, has "
            f"{node.allocatable} ({have} GiB)"
        )
    return _Candidate(node, tp)


def size_unknown(spec: TritonVLLMModelSpec, why: str = "") -> Unplaceable:
    """`auto` with nothing to size the model by: no facts, no spec.modelSizeGiB."""
    return Unplaceable(
        "ModelSizeUnknown",
        f"{why or 'The size of the model is unknown.'} tensorParallelSize is auto: set "
        "spec.modelSizeGiB (the weights' size) or an integer spec.tensorParallelSize.",
    )


def place(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs]) -> Placement | Unplaceable:
    """Resolve tensor parallelism against the nodes by spec.modelSizeGiB (the README's policy
    without the model's facts); `auto` without a size is not placed."""
    if not gpus:
        return Unplaceable(
            "NoGPUNodes",
            f"No node has allocatable {spec.gpu.resource_name}. Add GPU nodes (with the NVIDIA "
            "device plugin) or set spec.gpu.resourceName to the resource your nodes expose.",
        )
    missing = missing_product(spec, gpus)
    if missing is not None:
        return missing
    excluded: dict[str, str] = {}
    candidates: list[_Candidate] = []
    for node in gpus:
        why = _excluded_by_spec(spec, node)
        if why:
            excluded[node.name] = why
            continue
        if spec.tensor_parallel_size == "auto":
            if spec.model_size_gi_b is None:
                return size_unknown(spec)
            sized = _auto_size(spec, node, spec.model_size_gi_b)
        elif gpus_per_pod(spec, spec.tensor_parallel_size) <= node.allocatable:
            sized = _Candidate(node, spec.tensor_parallel_size)
        else:
            needed = gpus_per_pod(spec, spec.tensor_parallel_size)
            sized = f"{node.allocatable} GPUs < the {needed} GPUs a pod needs"
        if isinstance(sized, str):
            excluded[node.name] = sized
        else:
            candidates.append(sized)
    if not candidates:
        return _unplaceable(spec, gpus, excluded)
    tp = min(c.tensor_parallel_size for c in candidates)  # the smallest TP that fits anywhere
    per_pod = gpus_per_pod(spec, tp)
    fitting = [c for c in candidates if c.node.allocatable >= per_pod]
    floor = None
    if spec.model_size_gi_b is not None:
        floor = math.ceil(spec.model_size_gi_b * 1024 / WEIGHT_SHARE / per_pod)
        for c in fitting:
            if (c.node.memory_mib or 0) < floor:
                excluded[c.node.name] = (
                    f"{tp} x {(c.node.memory_mib or 0) // 1024} GiB is too little for "
                    f"{spec.model_size_gi_b:g} GiB of weights"
                )
        fitting = [c for c in fitting if (c.node.memory_mib or 0) >= floor]
    if not fitting:
        return _unplaceable(spec, gpus, excluded)
    fit_now = sum(c.node.free // per_pod for c in fitting)
    names = tuple(c.node.name for c in fitting)
    message = f"tensorParallelSize={tp} fits on {len(names)} node(s): {', '.join(names)}"
    return Placement(tp, names, fit_now, floor, message)


def _unplaceable(
    spec: TritonVLLMModelSpec, gpus: list[NodeGPUs], excluded: dict[str, str]
) -> Unplaceable:
    largest = max(gpus, key=lambda n: (n.allocatable, n.memory_mib or 0))
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(excluded.items()))
    want = (
        f"tensorParallelSize={spec.tensor_parallel_size}"
        if spec.tensor_parallel_size != "auto"
        else "tensorParallelSize=auto"
        + (f" for {spec.model_size_gi_b:g} GiB of weights" if spec.model_size_gi_b else "")
    )
    return Unplaceable(
        "NoNodeFits",
        f"No node can run one replica with {want}. The largest GPU node is "
        f"{largest.describe()}. Excluded: {why}. Add a node that fits, or lower "
        "spec.tensorParallelSize, or relax spec.gpu / nodeSelector / tolerations.",
    )


def place_unseen(spec: TritonVLLMModelSpec, why: Unplaceable) -> Placement | None:
    """A placement to render pods for before a node that fits exists, or None.

    Node autoscalers (cluster-autoscaler, Karpenter) add nodes for Pending pods, so the pods must
    exist even when no node fits yet: an explicit size is rendered as asked, and `auto` when
    spec.gpu.minMemoryGiB and spec.modelSizeGiB say how many GPUs the weights need.
    """
    if spec.tensor_parallel_size != "auto":
        return Placement(spec.tensor_parallel_size, (), 0, None, why.message)
    memory_gib = spec.gpu.min_memory_gi_b
    if spec.model_size_gi_b is None or not memory_gib:
        return None
    needed_mib = spec.model_size_gi_b * 1024 / WEIGHT_SHARE
    tp = 1
    while gpus_per_pod(spec, tp) * memory_gib * 1024 < needed_mib:
        tp *= 2
    floor = math.ceil(needed_mib / gpus_per_pod(spec, tp))
    return Placement(tp, (), 0, floor, why.message)


def free_replica_slots(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs], tp: int) -> int:
    """How many more replicas at `tp` the eligible nodes could start right now."""
    per_pod = gpus_per_pod(spec, tp)
    return sum(
        node.free // per_pod
        for node in gpus
        if node.free >= per_pod and not _excluded_by_spec(spec, node)
    )
