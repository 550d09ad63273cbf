"""Why a model's pods may not use a node: one function, one reason per node."""

from __future__ import annotations

from collections.abc import Mapping

from ..api import NodeSelectorRequirement, NodeSelectorTerm, TritonVLLMModelSpec
from .inventory import MEMORY_LABEL, PRODUCT_LABEL, NodeGPUs


def _matches(requirement: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement.key)
    op = requirement.operator
    if op == "In":
        return value in requirement.values
    if op == "NotIn":
        return value not in requirement.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if value is None or not value.lstrip("-").isdigit() or not requirement.values:
        return False
    bound = int(requirement.values[0])
    return int(value) > bound if op == "Gt" else int(value) < bound


def _term_holds(term: NodeSelectorTerm, node: NodeGPUs) -> bool:
    fields = {"metadata.name": node.name}
    return all(_matches(r, node.labels) for r in term.match_expressions) and all(
        _matches(r, fields) for r in term.match_fields
    )


def _affinity_excludes(spec: TritonVLLMModelSpec, node: NodeGPUs) -> bool:
    node_affinity = spec.affinity.node_affinity if spec.affinity else None
    required = (
        node_affinity.required_during_scheduling_ignored_during_execution if node_affinity else None
    )
    if required is None or not required.node_selector_terms:
        return False
    return not any(_term_holds(term, node) for term in required.node_selector_terms)


def exclusion(spec: TritonVLLMModelSpec, node: NodeGPUs, needs_memory_label: bool) -> str | None:
    """Why the model's pods may not use the node, or cannot be sized on it; None when they may.
    `needs_memory_label`: the memory plan sizes by the GPUs' memory."""
    if node.unusable_reason:
        return node.unusable_reason
    if spec.gpu.product and node.product != spec.gpu.product:
        return f"product {node.product or 'unlabelled'}"
    if needs_memory_label and not node.memory_mib:
        return f"no {MEMORY_LABEL} label to size the model on"
    if spec.gpu.min_memory_gi_b and (node.memory_mib or 0) < spec.gpu.min_memory_gi_b * 1024:
        return f"GPU memory {(node.memory_mib or 0) // 1024} GiB < {spec.gpu.min_memory_gi_b} GiB"
    for key, value in spec.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    if _affinity_excludes(spec, node):
        return "affinity.nodeAffinity"
    return None


def missing_product(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs]) -> str | None:
    """spec.gpu.product that no GPU node (usable or not) carries: said first, with the products
    the nodes do have, since excluding every node one by one hides it."""
    product = spec.gpu.product
    if not product or any(node.product == product for node in gpus):
        return None
    products = sorted({node.product for node in gpus if node.product})
    have = ", ".join(products) if products else f"none labelled {PRODUCT_LABEL}"
    return (
        f"No node has {PRODUCT_LABEL}={product} (nodes have: {have}). Set spec.gpu.product to "
        "one of those, or add nodes with that GPU."
    )
