"""Bin-packing: among the GPU classes a replica fits, the smallest first, so small models leave
the big nodes to the models that need them. Rendered as weighted preferred node affinity on the
GPU product label, and read back from a live pod template."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .inventory import PRODUCT_LABEL, NodeGPUs


def smallest_first(nodes: Iterable[NodeGPUs]) -> tuple[str, ...]:
    """The nodes' GPU products, the smallest class first: least memory per GPU (in whole GiB,
    so 22.49 and 22.5 GiB are the same class), then fewest GPUs on a node. Nodes without a
    product label cannot be preferred by it."""
    size: dict[str, tuple[int, int]] = {}
    for node in nodes:
        if node.product:
            here = ((node.memory_mib or 0) // 1024, node.allocatable)
            size[node.product] = min(size.get(node.product, here), here)
    return tuple(sorted(size, key=lambda product: (size[product], product)))


def _weight(rank: int) -> int:
    """100 for the first product, less for each after it (the scheduler's weights are 1-100)."""
    return max(100 // (rank + 1), 1)


def preferred_terms(products: tuple[str, ...]) -> list[dict[str, Any]]:
    """preferredDuringSchedulingIgnoredDuringExecution terms for the products, in order; none for
    a single product (nothing to choose between)."""
    if len(products) < 2:
        return []
    return [
        {
            "weight": _weight(rank),
            "preference": {
                "matchExpressions": [{"key": PRODUCT_LABEL, "operator": "In", "values": [product]}]
            },
        }
        for rank, product in enumerate(products)
    ]


def preferred_products(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The products a rendered pod template prefers, in order (what `preferred_terms` wrote)."""
    node_affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    ranked: list[tuple[int, str]] = []
    for term in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        expressions = (term.get("preference") or {}).get("matchExpressions") or []
        if len(expressions) != 1:
            continue
        expression = expressions[0]
        values = expression.get("values") or []
        ours = expression.get("key") == PRODUCT_LABEL and expression.get("operator") == "In"
        if ours and len(values) == 1 and isinstance(term.get("weight"), int):
            ranked.append((-term["weight"], values[0]))
    return tuple(product for _, product in sorted(ranked))
