"""Placement from a model's own facts over a pool of GPU nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders import A10G, H100, L4, gpu_node, model
from tests.unit.model_dirs import snapshot
from triton_vllm_operator.model_facts import ModelFacts, facts_from_dir
from triton_vllm_operator.placement import Placement, Unplaceable, inventory, memory_plan
from triton_vllm_operator.placement import place as place_on

POOL = [
    gpu_node("gpu-h100-0", 8, H100),
    gpu_node("gpu-h100-1", 8, H100),
    gpu_node("gpu-a10g-0", 4, A10G),
    gpu_node("gpu-l4-0", 1, L4),
    gpu_node("gpu-unlabelled-0", 8, None),
    gpu_node("cpu-0", 0, None),
]


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFacts]:
    into: Path = tmp_path_factory.mktemp("models")
    names = ["Llama-3.1-8B", "Llama-3.1-70B-Instruct", "Qwen2.5-0.5B-Instruct"]
    return {name: facts_from_dir(snapshot(name, into)) for name in names}


def place(facts: ModelFacts, nodes: list[dict[str, Any]] = POOL, **spec: Any) -> Any:
    m = model(**spec)
    return place_on(m.spec, memory_plan(m.spec, facts), inventory(m.spec, nodes, [])).fresh


@pytest.mark.parametrize(
    ("name", "spec", "tp", "nodes", "floor"),
    [
        (
            "Qwen2.5-0.5B-Instruct",
            {},
            1,
            ("gpu-a10g-0", "gpu-h100-0", "gpu-h100-1", "gpu-l4-0"),
            3750,
        ),
        ("Llama-3.1-8B", {}, 1, ("gpu-h100-0", "gpu-h100-1"), 37499),
        (
            "Llama-3.1-8B",
            {"engineArgs": {"max_model_len": 16384}},
            1,
            ("gpu-a10g-0", "gpu-h100-0", "gpu-h100-1", "gpu-l4-0"),
            21570,
        ),
        ("Llama-3.1-8B", {"gpu": {"product": "NVIDIA-A10G"}}, 2, ("gpu-a10g-0",), 19887),
        ("Llama-3.1-70B-Instruct", {}, 4, ("gpu-h100-0", "gpu-h100-1"), 51035),
    ],
    ids=["0.5b-anywhere", "8b-128k-on-h100", "8b-16k-anywhere", "8b-on-a10g-pair", "70b"],
)
def test_smallest_size_that_fits_and_where(
    facts: dict[str, ModelFacts],
    name: str,
    spec: dict[str, Any],
    tp: int,
    nodes: tuple[str, ...],
    floor: int,
) -> None:
    result = place(facts[name], **spec)
    assert isinstance(result, Placement), result
    assert (result.tensor_parallel_size, result.nodes, result.min_memory_mib) == (tp, nodes, floor)


def test_explicit_size_the_model_cannot_split_into(facts: dict[str, ModelFacts]) -> None:
    result = place(facts["Qwen2.5-0.5B-Instruct"], tensorParallelSize=3)
    assert isinstance(result, Unplaceable)
    assert result.reason == "TensorParallelSizeInvalid"
    assert "Use tensorParallelSize 1 or 2." in result.message


def test_nothing_fits_names_the_largest_node(facts: dict[str, ModelFacts]) -> None:
    result = place(facts["Llama-3.1-70B-Instruct"], nodes=POOL[2:4])
    assert isinstance(result, Unplaceable)
    assert result.reason == "ModelTooLarge"
    assert result.message.startswith("On gpu-a10g-0 (4 x NVIDIA-A10G, 22 GiB each, 4 free):")


def test_nodes_without_a_memory_label_are_excluded_and_said_so(
    facts: dict[str, ModelFacts],
) -> None:
    result = place(facts["Llama-3.1-8B"], nodes=[POOL[4]])
    assert isinstance(result, Unplaceable)
    assert "gpu-unlabelled-0: no nvidia.com/gpu.memory label" in result.message


def test_no_gpu_nodes(facts: dict[str, ModelFacts]) -> None:
    result = place(facts["Llama-3.1-8B"], nodes=[POOL[5]])
    assert isinstance(result, Unplaceable)
    assert result.reason == "NoGPUNodes"


def test_a_product_no_node_has_is_named_with_the_products_there_are(
    facts: dict[str, ModelFacts],
) -> None:
    result = place(facts["Llama-3.1-8B"], gpu={"product": "NVIDIA-B200"})
    assert isinstance(result, Unplaceable)
    assert "No node has nvidia.com/gpu.product=NVIDIA-B200 (nodes have: NVIDIA-A10G, " in (
        result.message
    )


def test_pipeline_parallel_splits_the_weights_over_tp_times_pp_gpus(
    facts: dict[str, ModelFacts],
) -> None:
    # 70B over 4 GPUs needs TP 4 alone; with 2 pipeline stages TP 2 (2 x 2 GPUs) fits.
    result = place(facts["Llama-3.1-70B-Instruct"], engineArgs={"pipeline_parallel_size": 2})
    assert isinstance(result, Placement), result
    assert (result.tensor_parallel_size, result.nodes) == (2, ("gpu-h100-0", "gpu-h100-1"))
    assert result.replicas_that_fit_now == 2 + 2
    refused = place(
        facts["Llama-3.1-70B-Instruct"],
        tensorParallelSize=4,
        engineArgs={"pipeline_parallel_size": 4},
    )
    assert isinstance(refused, Unplaceable)
    assert "16 GPUs" in refused.message


def test_an_explicit_size_may_use_nodes_that_do_not_say_their_gpu_memory(
    facts: dict[str, ModelFacts],
) -> None:
    result = place(facts["Llama-3.1-8B"], nodes=[POOL[4]], tensorParallelSize=2)
    assert isinstance(result, Placement)
    assert result.nodes == ("gpu-unlabelled-0",) and result.warning is None


def test_an_explicit_size_prefers_the_gpus_the_estimate_fits(facts: dict[str, ModelFacts]) -> None:
    # Llama 3.1 8B at its full 128k context: one H100 holds it, one L4 or A10G does not.
    result = place(facts["Llama-3.1-8B"], nodes=POOL[:4], tensorParallelSize=1)
    assert isinstance(result, Placement) and result.warning is None
    assert result.nodes == ("gpu-a10g-0", "gpu-h100-0", "gpu-h100-1", "gpu-l4-0")
    assert result.preferred_products == ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A10G", "NVIDIA-L4")
