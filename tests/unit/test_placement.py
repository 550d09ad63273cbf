"""Tensor parallelism sized to the nodes: table-driven placement tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import A10G, H100, L4, gpu_node, gpu_pod, model
from triton_vllm_operator.placement import (
    BELOW_ESTIMATE,
    Placement,
    Unplaceable,
    inventory,
    place_by_size,
)

MIXED_POOL = [
    gpu_node("gpu-h100-0", 8, H100),
    gpu_node("gpu-h100-1", 8, H100),
    gpu_node("gpu-a10g-0", 4, A10G),
    gpu_node("gpu-l4-0", 1, L4),
    gpu_node("cpu-0", 0, None),
]


def resolve(nodes: list[dict[str, Any]], pods: list[dict[str, Any]] | None = None, **spec: Any):
    m = model(**spec)
    return place_by_size(m.spec, inventory(m.spec, nodes, pods or []))


@pytest.mark.parametrize(
    ("spec", "tp", "nodes"),
    [
        pytest.param(
            {"modelSizeGiB": 16}, 1, ("gpu-h100-0", "gpu-h100-1"), id="auto-8b-on-one-h100"
        ),
        pytest.param(
            {"modelSizeGiB": 140}, 4, ("gpu-h100-0", "gpu-h100-1"), id="auto-70b-on-four-h100"
        ),
        pytest.param(
            {"modelSizeGiB": 16, "gpu": {"product": "NVIDIA-A10G"}},
            2,
            ("gpu-a10g-0",),
            id="auto-8b-needs-two-a10g",
        ),
        pytest.param(
            {"tensorParallelSize": 4, "gpu": {"product": "NVIDIA-A10G"}},
            4,
            ("gpu-a10g-0",),
            id="explicit-tp4-on-a10g",
        ),
        pytest.param(
            {"tensorParallelSize": 4},
            4,
            ("gpu-a10g-0", "gpu-h100-0", "gpu-h100-1"),
            id="explicit-tp4-any-node-with-four",
        ),
        pytest.param(
            {"tensorParallelSize": 1, "gpu": {"minMemoryGiB": 40}},
            1,
            ("gpu-h100-0", "gpu-h100-1"),
            id="min-memory-filters-small-gpus",
        ),
        pytest.param(
            {"tensorParallelSize": 1, "nodeSelector": {"pool": "l4"}},
            None,
            (),
            id="node-selector-no-match",
        ),
    ],
)
def test_placement_table(spec: dict[str, Any], tp: int | None, nodes: tuple[str, ...]) -> None:
    result = resolve(MIXED_POOL, **spec)
    if tp is None:
        assert isinstance(result, Unplaceable)
        return
    assert isinstance(result, Placement), result
    assert result.tensor_parallel_size == tp
    assert result.nodes == nodes


def test_tp16_is_unplaceable_and_names_the_largest_node() -> None:
    result = resolve(MIXED_POOL, tensorParallelSize=16)
    assert isinstance(result, Unplaceable)
    assert result.reason == "NotEnoughGPUs"
    assert result.message.startswith(
        "On gpu-h100-0 (8 x NVIDIA-H100-80GB-HBM3, 79 GiB each, 8 free): 8 GPUs < the 16 GPUs"
    )
    assert "lower spec.tensorParallelSize" in result.message
    assert "gpu-l4-0: 1 GPUs < the 16 GPUs a pod needs" in result.message


def test_tp16_fits_once_a_16_gpu_node_joins() -> None:
    result = resolve([*MIXED_POOL, gpu_node("gpu-big-0", 16, H100)], tensorParallelSize=16)
    assert isinstance(result, Placement)
    assert result.nodes == ("gpu-big-0",)


def test_product_no_node_has_is_explained() -> None:
    result = resolve(MIXED_POOL, gpu={"product": "NVIDIA-B200"}, tensorParallelSize=1)
    assert isinstance(result, Unplaceable)
    assert result.message.startswith(
        "No node has nvidia.com/gpu.product=NVIDIA-B200 (nodes have: NVIDIA-A10G, "
        "NVIDIA-H100-80GB-HBM3, NVIDIA-L4)."
    )
    assert "spec.gpu.product" in result.message


def test_a_product_only_a_cordoned_node_has_is_not_said_missing() -> None:
    cordoned = gpu_node("gpu-b200-0", 8, ("NVIDIA-B200", 183359), cordoned=True)
    result = resolve([*MIXED_POOL, cordoned], gpu={"product": "NVIDIA-B200"}, modelSizeGiB=16)
    assert isinstance(result, Unplaceable)
    assert "No node has" not in result.message
    assert "gpu-b200-0: cordoned" in result.message


def test_weights_too_big_for_any_node() -> None:
    result = resolve(MIXED_POOL, modelSizeGiB=800)
    assert isinstance(result, Unplaceable)
    assert result.reason == "InsufficientGPUMemory"
    assert result.message.startswith(
        "On gpu-h100-0 (8 x NVIDIA-H100-80GB-HBM3, 79 GiB each, 8 free): 800 GiB of weights need "
        "16 GPUs of 79 GiB, the node has 8 (637 GiB)."
    )
    assert "gpu-l4-0: 800 GiB of weights need 64 GPUs of 22 GiB" in result.message


def test_explicit_tp_too_small_for_the_weights_is_placed_with_a_warning() -> None:
    result = resolve(MIXED_POOL, tensorParallelSize=1, modelSizeGiB=140)
    assert isinstance(result, Placement)
    assert result.min_memory_mib is None  # no floor the user did not ask for
    assert result.warning is not None and result.warning.reason == BELOW_ESTIMATE
    assert "1 x 79 GiB is too little for 140 GiB of weights" in result.warning.message
    assert result.warning.message in result.message
    # Every node could be asked: the largest GPUs first.
    assert result.preferred_products == ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A10G", "NVIDIA-L4")


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (gpu_node("n", 8, ready=False), "NotReady"),
        (gpu_node("n", 8, cordoned=True), "cordoned"),
        (
            gpu_node(
                "n", 8, taints=[{"key": "dedicated", "value": "train", "effect": "NoSchedule"}]
            ),
            "taint dedicated=train:NoSchedule",
        ),
    ],
)
def test_unusable_nodes_are_skipped_with_the_reason(node: dict[str, Any], why: str) -> None:
    result = resolve([node], tensorParallelSize=1)
    assert isinstance(result, Unplaceable)
    assert f"n: {why}" in result.message


def test_a_tolerated_taint_keeps_the_node() -> None:
    node = gpu_node("n", 8, taints=[{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}])
    tolerations = [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    ]
    result = resolve([node], tensorParallelSize=2, tolerations=tolerations)
    assert isinstance(result, Placement)


def test_prefer_no_schedule_taints_do_not_exclude() -> None:
    node = gpu_node("n", 2, taints=[{"key": "x", "value": "y", "effect": "PreferNoSchedule"}])
    assert isinstance(resolve([node], tensorParallelSize=2), Placement)


def test_gpus_in_use_reduce_replicas_that_fit_now() -> None:
    pods = [
        gpu_pod("gpu-h100-0", 6),
        gpu_pod("gpu-h100-1", 4),
        gpu_pod("gpu-h100-1", 8, "Succeeded"),
    ]
    nodes = MIXED_POOL[:2]
    result = resolve(nodes, pods, tensorParallelSize=2)
    assert isinstance(result, Placement)
    # 2 free on h100-0 and 4 on h100-1: the finished pod's GPUs are free again.
    assert result.replicas_that_fit_now == 1 + 2


def test_no_gpu_nodes_at_all() -> None:
    result = resolve([gpu_node("cpu-0", 0, None)])
    assert isinstance(result, Unplaceable)
    assert result.reason == "NoGPUNodes"
    assert "nvidia.com/gpu" in result.message


def test_custom_resource_name_counts_other_gpus() -> None:
    node = gpu_node("mig", 0, None)
    node["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "7"
    result = resolve([node], tensorParallelSize=1, gpu={"resourceName": "nvidia.com/mig-1g.10gb"})
    assert isinstance(result, Placement)
    assert result.replicas_that_fit_now == 7


def test_memory_floor_pins_pods_to_big_enough_gpus() -> None:
    result = resolve(MIXED_POOL, modelSizeGiB=16)
    assert isinstance(result, Placement)
    assert result.min_memory_mib == 23406  # 16 GiB / 0.7 on one GPU


@pytest.mark.parametrize("spec", [{}, {"gpu": {"product": "NVIDIA-A10G"}}])
def test_auto_without_a_size_is_not_placed_and_says_what_to_set(spec: dict[str, Any]) -> None:
    result = resolve(MIXED_POOL, **spec)
    assert isinstance(result, Unplaceable)
    assert result.reason == "ModelSizeUnknown"
    assert "spec.modelSizeGiB" in result.message
    assert "spec.tensorParallelSize" in result.message


def test_auto_without_a_size_on_no_eligible_node_says_what_the_nodes_lack() -> None:
    result = resolve(MIXED_POOL, gpu={"product": "NVIDIA-B200"})
    assert isinstance(result, Unplaceable) and result.reason == "NoNodeFits"


def test_pipeline_parallel_pods_need_tp_times_pp_gpus_on_one_node() -> None:
    args = {"pipeline_parallel_size": 2}
    result = resolve(MIXED_POOL, tensorParallelSize=2, engineArgs=args)
    assert isinstance(result, Placement)
    assert result.nodes == ("gpu-a10g-0", "gpu-h100-0", "gpu-h100-1")  # not the 1- or 2-GPU
    assert result.replicas_that_fit_now == 1 + 2 + 2
    too_big = resolve(MIXED_POOL, tensorParallelSize=4, engineArgs={"pipeline_parallel_size": 4})
    assert isinstance(too_big, Unplaceable)
    assert "16 GPUs" in too_big.message
