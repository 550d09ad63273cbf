"""The one placement algorithm: (spec, memory plan, GPU inventory, sticky placement) -> the
tensor-parallel size, the nodes a replica fits and the GPU classes to prefer, or why nothing fits.

- Nodes the pods may not use are excluded, each with its reason (exclusion.py).
- `auto`: the memory plan chooses the smallest size that fits each node; the smallest of those
  wins, and the pods are pinned to GPUs with the memory a replica needs at that size.
- An explicit size is the user's word: every node with enough GPUs for a pod qualifies; a memory
  estimate that disagrees is a warning, never a floor.
- Among the GPU classes that fit, the smallest is preferred (preference.py).
- A placement recorded on the live Deployment (`sticky`) is kept; the nodes are still asked, for
  messages.

A replica spans spec.nodesPerReplica nodes (the pipeline's stages, each a pod of TP GPUs on its
own node): the memory plan splits the model over all of them, and as many nodes must qualify.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..api import TritonVLLMModelSpec, replica_nodes
from .budget import MEMORY_REASONS, GPUs, Refusal, Sized
from .by_size import UnsizedPlan
from .exclusion import exclusion, missing_product
from .inventory import NodeGPUs, gpus_per_pod
from .memory import MemoryPlan
from .preference import smallest_first

# The reason of the warning an explicit size gets when the estimate says it does not fit.
BELOW_ESTIMATE = "TensorParallelSizeBelowEstimate"
# Refusals that only say the estimate cannot be made: an explicit size is taken as asked.
UNKNOWN_REASONS = ("MaxModelLenUnknown", "ModelSizeUnknown")
# GPUs to size `auto` on when no node fits yet and spec.gpu.minMemoryGiB names the GPU: as many
# as a replica could want.
UNBOUNDED_GPUS = 1024


@dataclass(frozen=True)
class PlacementWarning:
    """Something the user asked for that the estimate disagrees with; worth an Event."""

    reason: str
    message: str


@dataclass(frozen=True)
class Placement:
    """A tensor-parallel size and the nodes that can run a replica of it."""

    tensor_parallel_size: int
    nodes: tuple[str, ...]
    replicas_that_fit_now: int
    min_memory_mib: int | None  # a per-GPU memory floor the pods must be pinned to
    message: str
    preferred_products: tuple[str, ...] = ()  # GPU products to prefer, the first most
    warning: PlacementWarning | None = None
    nodes_per_replica: int = 1  # nodes one replica spans, each with TP x PP GPUs
    # The digest (sticky.py) of the spec as written, where the rendered one differs from it
    # (`nodesPerReplica: auto`, resolved): what the live workload must match to keep this.
    spec_digest: str | None = None


@dataclass(frozen=True)
class Unplaceable:
    """No node can run a replica; the message says what the cluster lacks or what to change."""

    reason: str
    message: str


@dataclass(frozen=True)
class Placed:
    """The placement to render (None: render nothing), and what the nodes say now."""

    placement: Placement | None
    fresh: Placement | Unplaceable  # what the nodes say now (for messages)
    sticky: bool


def place(
    spec: TritonVLLMModelSpec,
    plan: MemoryPlan,
    gpus: list[NodeGPUs],
    sticky: Placement | None = None,
) -> Placed:
    """Where the model goes: the sticky placement while there is one, else what the nodes say,
    else (nothing fits) the pods a node autoscaler can act on, where their size is known."""
    fresh = _place_fresh(spec, plan, gpus)
    if sticky is not None:
        kept = sticky.tensor_parallel_size
        if isinstance(fresh, Placement) and fresh.warning and fresh.tensor_parallel_size == kept:
            sticky = replace(sticky, warning=fresh.warning)  # the estimate still disagrees
        return Placed(sticky, fresh, True)
    if isinstance(fresh, Placement):
        return Placed(fresh, fresh, False)
    return Placed(_unseen(spec, plan, fresh), fresh, False)


def _place_fresh(
    spec: TritonVLLMModelSpec, plan: MemoryPlan, gpus: list[NodeGPUs]
) -> Placement | Unplaceable:
    if not gpus:
        return Unplaceable(
            "NoGPUNodes",
            f"No node has allocatable {spec.gpu.resource_name}. Add GPU nodes (with the NVIDIA "
            "device plugin) or set spec.gpu.resourceName to the resource your nodes expose.",
        )
    missing = missing_product(spec, gpus)
    if missing:
        return Unplaceable("NoNodeFits", missing)
    excluded: dict[str, str] = {}
    eligible: list[NodeGPUs] = []
    # An explicit size needs no memory label: the estimate only warns.
    sized_by_memory = plan.needs_memory_label and spec.tensor_parallel_size == "auto"
    for node in gpus:
        why = exclusion(spec, node, sized_by_memory)
        if why:
            excluded[node.name] = why
        else:
            eligible.append(node)
    if not eligible:
        return _unplaceable(spec, plan, gpus, None, excluded)
    tp = spec.tensor_parallel_size
    if tp == "auto":
        if isinstance(plan, UnsizedPlan):
            return Unplaceable(plan.reason, plan.message)
        return _place_auto(spec, plan, gpus, eligible, excluded)
    return _place_explicit(spec, plan, gpus, eligible, excluded, tp)


def _place_auto(
    spec: TritonVLLMModelSpec,
    plan: MemoryPlan,
    gpus: list[NodeGPUs],
    eligible: list[NodeGPUs],
    excluded: dict[str, str],
) -> Placement | Unplaceable:
    sizes = []
    for node in eligible:
        result = plan.choose(node.gpus)
        if isinstance(result, Sized):
            sizes.append(result.tensor_parallel_size)
        else:
            excluded[node.name] = result.message
    if not sizes:
        return _unplaceable(spec, plan, gpus, eligible, excluded)
    tp = min(sizes)  # the smallest size that fits anywhere
    fits: list[tuple[NodeGPUs, Sized]] = []
    for node in eligible:
        result = plan.fit(node.gpus, tp)
        if isinstance(result, Sized):
            fits.append((node, result))
        else:
            excluded.setdefault(node.name, result.message)
    # Pinned to GPUs with the memory a replica needs at this size (where the plan can tell).
    floor = plan.min_memory_mib(tp)
    return _placement(spec, tp, fits, smallest_first(node for node, _ in fits), floor, None)


def _place_explicit(
    spec: TritonVLLMModelSpec,
    plan: MemoryPlan,
    gpus: list[NodeGPUs],
    eligible: list[NodeGPUs],
    excluded: dict[str, str],
    tp: int,
) -> Placement | Unplaceable:
    per_pod = gpus_per_pod(spec, tp)
    fits: list[tuple[NodeGPUs, Sized]] = []
    disagree: list[tuple[NodeGPUs, Refusal]] = []
    for node in eligible:
        if node.allocatable < per_pod:
            excluded[node.name] = f"{node.allocatable} GPUs < the {per_pod} GPUs a pod needs"
            continue
        result = plan.fit(node.gpus, tp)
        if isinstance(result, Sized):
            fits.append((node, result))
        elif result.reason in MEMORY_REASONS and not node.memory_mib:
            fits.append((node, Sized(tp, "")))  # unlabelled GPUs: the estimate cannot tell
        elif result.reason in MEMORY_REASONS:
            disagree.append((node, result))
        elif result.reason in UNKNOWN_REASONS:
            fits.append((node, Sized(tp, "")))  # the estimate cannot tell: taken as asked
        else:
            excluded[node.name] = result.message
    if not fits and not disagree:
        return _unplaceable(spec, plan, gpus, eligible, excluded)
    warning = None
    if not fits:
        # No GPU fits by the estimate: the size is the user's, the pods prefer the largest GPUs.
        disagree.sort(key=lambda pair: -(pair[0].memory_mib or 0))
        node, refusal = disagree[0]
        warning = PlacementWarning(
            BELOW_ESTIMATE,
            f"tensorParallelSize={tp} is used as set, though the memory estimate says it does "
            f"not fit: on {node.describe()}, {refusal.message}",
        )
    # The classes the estimate fits, smallest first; then the others, largest first.
    rejected = smallest_first(node for node, _ in disagree)[::-1]
    products = smallest_first(node for node, _ in fits)
    products += tuple(p for p in rejected if p not in products)
    chosen = fits + [(node, Sized(tp, "")) for node, _ in disagree]
    if len(chosen) < replica_nodes(spec):
        names = ", ".join(sorted(node.name for node, _ in chosen))
        return Unplaceable(
            "NotEnoughGPUs",
            f"A replica spans spec.nodesPerReplica={replica_nodes(spec)} nodes of {per_pod} "
            f"GPUs each; {len(chosen)} node(s) qualify: {names or 'none'}. Add such nodes. "
            f"Excluded: {_reasons(excluded) or 'none'}.",
        )
    return _placement(spec, tp, chosen, products, None, warning)


def _placement(
    spec: TritonVLLMModelSpec,
    tp: int,
    fits: list[tuple[NodeGPUs, Sized]],
    products: tuple[str, ...],
    floor: int | None,
    warning: PlacementWarning | None,
) -> Placement:
    per_pod = gpus_per_pod(spec, tp)
    nodes = [node for node, _ in fits]
    names = tuple(sorted(node.name for node in nodes))
    spans = replica_nodes(spec)
    across = f" x {spans} nodes a replica" if spans > 1 else ""
    message = f"tensorParallelSize={tp}{across} fits on {len(names)} node(s): {', '.join(names)}"
    if len(products) > 1:
        message += f"; preferring {', '.join(products)} in that order"
    best = next((sized for node, sized in fits if products and node.product == products[0]), None)
    detail = (best or fits[0][1]).message
    message += f". {detail}" if detail else "."
    if warning:
        message += f" Warning ({warning.reason}): {warning.message}"
    return Placement(
        tp,
        names,
        sum(node.free // per_pod for node in nodes) // spans,
        floor,
        message,
        preferred_products=products,
        warning=warning,
        nodes_per_replica=spans,
    )


def _unplaceable(
    spec: TritonVLLMModelSpec,
    plan: MemoryPlan,
    gpus: list[NodeGPUs],
    eligible: list[NodeGPUs] | None,
    excluded: dict[str, str],
) -> Unplaceable:
    """Why no node fits: what the largest eligible node lacks, then every other node's reason."""
    tp = spec.tensor_parallel_size
    if eligible:
        largest = max(eligible, key=lambda n: (n.allocatable, n.memory_mib or 0))
        refusal = plan.choose(largest.gpus) if tp == "auto" else plan.fit(largest.gpus, tp)
        if isinstance(refusal, Refusal):
            others = _reasons({k: v for k, v in excluded.items() if k != largest.name})
            also = f" Other nodes: {others}." if others else ""
            return Unplaceable(refusal.reason, f"On {largest.describe()}: {refusal.message}{also}")
    largest = max(gpus, key=lambda n: (n.allocatable, n.memory_mib or 0))
    want = f"tensorParallelSize={tp}" + (" for " + plan.describe() if tp == "auto" else "")
    return Unplaceable(
        "NoNodeFits",
        f"No node can run one replica with {want}. The largest GPU node is "
        f"{largest.describe()}. Excluded: {_reasons(excluded)}. Add a node that fits, or "
        "relax spec.gpu / nodeSelector / affinity / tolerations.",
    )


def _reasons(excluded: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason.rstrip('.')}" for name, reason in sorted(excluded.items()))


def _unseen(spec: TritonVLLMModelSpec, plan: MemoryPlan, why: Unplaceable) -> Placement | None:
    """A placement to render pods for before a node that fits exists, or None.

    Node autoscalers (cluster-autoscaler, Karpenter) add nodes for Pending pods, so the pods must
    exist even when no node fits yet: an explicit size is rendered as asked (no memory floor),
    `auto` when spec.gpu.minMemoryGiB says which GPUs to size on.
    """
    tp = spec.tensor_parallel_size
    if tp != "auto":
        return Placement(tp, (), 0, None, why.message, nodes_per_replica=replica_nodes(spec))
    memory_gib = spec.gpu.min_memory_gi_b
    if not memory_gib:
        return None
    sized = plan.choose(GPUs.from_mib(UNBOUNDED_GPUS, memory_gib * 1024, spec.gpu.product))
    if not isinstance(sized, Sized):
        return None
    size = sized.tensor_parallel_size
    return Placement(size, (), 0, plan.min_memory_mib(size), why.message)


def free_replica_slots(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs], tp: int) -> int:
    """How many more replicas at `tp` the eligible nodes could start right now."""
    per_pod = gpus_per_pod(spec, tp)
    return sum(
        node.free // per_pod
        for node in gpus
        if node.free >= per_pod and not exclusion(spec, node, needs_memory_label=False)
    )
