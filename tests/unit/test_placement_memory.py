"""The memory plan by a model's facts: tensor parallelism and max_model_len sized from real
model configs, table tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders import model
from tests.unit.model_dirs import snapshot
from triton_vllm_operator.model_facts import (
    GIB,
    ModelFacts,
    facts_from_dir,
    parse_config,
    with_size_hint,
)
from triton_vllm_operator.placement import (
    EngineArgError,
    EngineLimits,
    GPUs,
    Refusal,
    Sized,
    memory_plan,
)
from triton_vllm_operator.placement.budget import GPUBudget
from triton_vllm_operator.placement.by_facts import FactsPlan
from triton_vllm_operator.placement.by_size import UnsizedPlan
from triton_vllm_operator.placement.kv_cache import kv_heads_per_gpu
from triton_vllm_operator.placement.split import valid_tensor_parallel_sizes

# nvidia.com/gpu.memory labels (MiB) that GPU Feature Discovery reports.
L4 = GPUs.from_mib(1, 23034, "NVIDIA-L4")
H100_X8 = GPUs.from_mib(8, 81559, "NVIDIA-H100-80GB-HBM3")
H200_X8 = GPUs.from_mib(8, 143771, "NVIDIA-H200")
A10G_X4 = GPUs.from_mib(4, 23028, "NVIDIA-A10G")


def choose(facts: ModelFacts, limits: EngineLimits, gpus: GPUs) -> Sized | Refusal:
    return FactsPlan(facts, limits).choose(gpus)


def fit(facts: ModelFacts, limits: EngineLimits, gpus: GPUs, tp: int) -> Sized | Refusal:
    return FactsPlan(facts, limits).fit(gpus, tp)


def budget(facts: ModelFacts, limits: EngineLimits, gpus: GPUs, tp: int, length: int) -> GPUBudget:
    return FactsPlan(facts, limits).budget(gpus, tp, length)


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFacts]:
    into: Path = tmp_path_factory.mktemp("models")
    names = [
        "Llama-3.1-8B",
        "Llama-3.1-70B-Instruct",
        "Qwen2.5-0.5B-Instruct",
        "Mistral-7B-v0.3",
        "Mixtral-8x7B-Instruct-v0.1",
        "gemma-3-27b-it",
    ]
    return {name: facts_from_dir(snapshot(name, into)) for name in names}


AUTO_TABLE = [
    ("Qwen2.5-0.5B-Instruct", H200_X8, {}, 1),
    ("Llama-3.1-8B", H100_X8, {}, 1),
    ("Llama-3.1-8B", L4, {"max_model_len": 16384}, 1),
    ("Llama-3.1-8B", A10G_X4, {}, 2),
    ("Mistral-7B-v0.3", L4, {}, 1),
    ("Llama-3.1-70B-Instruct", H100_X8, {}, 4),
    ("Llama-3.1-70B-Instruct", H100_X8, {"max_model_len": 8192}, 2),
    ("Llama-3.1-70B-Instruct", H200_X8, {}, 2),
    ("Mixtral-8x7B-Instruct-v0.1", H100_X8, {}, 2),
    ("Llama-3.1-8B", H100_X8, {"dtype": "float32"}, 1),
]


@pytest.mark.parametrize(
    ("name", "gpus", "engine_args", "tp"),
    AUTO_TABLE,
    ids=[f"{r[0]}-{r[1].count}x{r[1].product}-{r[2] or 'defaults'}" for r in AUTO_TABLE],
)
def test_auto_picks_the_smallest_tensor_parallel_size_that_fits(
    facts: dict[str, ModelFacts], name: str, gpus: GPUs, engine_args: dict[str, Any], tp: int
) -> None:
    result = choose(facts[name], EngineLimits.from_engine_args(engine_args), gpus)
    assert isinstance(result, Sized), result
    assert result.tensor_parallel_size == tp
    assert result.budget is not None and result.budget.fits
    assert f"{name} at tensorParallelSize={tp} fits" in result.message


def test_a_half_billion_model_takes_one_gpu_of_an_eight_gpu_node(
    facts: dict[str, ModelFacts],
) -> None:
    result = choose(facts["Qwen2.5-0.5B-Instruct"], EngineLimits(), H200_X8)
    assert isinstance(result, Sized)
    assert result.tensor_parallel_size == 1
    assert result.budget is not None
    assert result.budget.max_model_len == 32768  # the model's own context


def test_8b_fits_one_l4_with_a_shorter_context_but_not_at_128k(
    facts: dict[str, ModelFacts],
) -> None:
    llama = facts["Llama-3.1-8B"]
    refused = choose(llama, EngineLimits(), L4)
    assert isinstance(refused, Refusal)
    assert refused.reason == "MaxModelLenTooLong"
    # 22.5 GiB x 0.9 = 20.2 GiB; weights 15.0 + overhead 2.0 leave 3.2 GiB of KV at 128 KiB/token.
    assert refused.largest_max_model_len == 26624
    assert (
        "per GPU 15.0 GiB of weights + 16.0 GiB of KV cache for one 131072-token sequence"
        in refused.message
    )
    assert "set spec.engineArgs.max_model_len to at most 26624" in refused.message

    fits = fit(llama, EngineLimits(max_model_len=26624), L4, 1)
    assert isinstance(fits, Sized)
    longer = fit(llama, EngineLimits(max_model_len=26624 + 1024), L4, 1)
    assert isinstance(longer, Refusal)
    assert longer.largest_max_model_len == 26624


def test_70b_bf16_on_80gb_gpus_takes_four(facts: dict[str, ModelFacts]) -> None:
    result = choose(facts["Llama-3.1-70B-Instruct"], EngineLimits(), H100_X8)
    assert isinstance(result, Sized)
    assert result.tensor_parallel_size == 4
    plan = result.budget
    assert plan is not None
    assert plan.weights_bytes == 141_107_412_992 // 4
    assert plan.kv_bytes_per_token == 2 * 80 * (8 // 4) * 128 * 2  # KV heads split 4 ways
    assert "per GPU 32.9 GiB of weights + 10.0 GiB of KV cache" in result.message


def test_tensor_parallel_size_that_does_not_divide_the_heads_is_refused_with_the_sizes_that_do(
    facts: dict[str, ModelFacts],
) -> None:
    result = fit(facts["Qwen2.5-0.5B-Instruct"], EngineLimits(), H200_X8, 3)
    assert isinstance(result, Refusal)
    assert result.reason == "TensorParallelSizeInvalid"
    assert result.message == (
        "Qwen2.5-0.5B-Instruct has 14 attention heads, 2 KV heads and an MLP of 4864: vLLM "
        "cannot split it over 3 GPUs (14 attention heads do not divide by 3). "
        "Use tensorParallelSize 1 or 2."
    )
    assert result.valid_sizes == (1, 2)


@pytest.mark.parametrize(
    ("tp", "why"),
    [
        (7, "2 KV heads can neither be divided by 7 nor each replicated"),
        (14, "its MLP of 4864 does not divide by 14"),
    ],
)
def test_divisors_of_the_heads_that_vllm_still_cannot_use_are_refused(
    facts: dict[str, ModelFacts], tp: int, why: str
) -> None:
    result = fit(facts["Qwen2.5-0.5B-Instruct"], EngineLimits(), H200_X8, tp)
    assert isinstance(result, Refusal)
    assert why in result.message


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("Llama-3.1-8B", (1, 2, 4, 8, 16, 32)),
        ("Llama-3.1-70B-Instruct", (1, 2, 4, 8, 16, 32, 64)),
        ("Qwen2.5-0.5B-Instruct", (1, 2)),
        ("Mixtral-8x7B-Instruct-v0.1", (1, 2, 4, 8, 16, 32)),
    ],
)
def test_valid_sizes(facts: dict[str, ModelFacts], name: str, sizes: tuple[int, ...]) -> None:
    assert valid_tensor_parallel_sizes(facts[name]) == sizes


def test_kv_heads_are_replicated_once_tp_exceeds_them(facts: dict[str, ModelFacts]) -> None:
    llama = facts["Llama-3.1-8B"]  # 8 KV heads
    assert [kv_heads_per_gpu(llama, tp) for tp in (1, 2, 4, 8, 16, 32)] == [8, 4, 2, 1, 1, 1]
    at16 = budget(llama, EngineLimits(), H100_X8, 16, 1)
    assert at16.kv_bytes_per_token == 2 * 32 * 1 * 128 * 2


def test_latent_attention_caches_one_latent_per_layer_on_every_gpu() -> None:
    # DeepSeek-V3's published attention and expert dimensions; its other fields left out.
    deepseek = parse_config(
        {
            "architectures": ["DeepseekV3ForCausalLM"],
            "num_hidden_layers": 61,
            "num_attention_heads": 128,
            "num_key_value_heads": 128,
            "hidden_size": 7168,
            "kv_lora_rank": 512,
            "qk_rope_head_dim": 64,
            "n_routed_experts": 256,
            "num_experts_per_tok": 8,
            "max_position_embeddings": 163840,
            "torch_dtype": "bfloat16",
        },
        "deepseek-ai/DeepSeek-V3",
    )
    assert deepseek.kv_bytes_per_token() == 61 * (512 + 64) * 2
    for tp in (1, 8):
        plan = budget(with_size_hint(deepseek, 600), EngineLimits(), H200_X8, tp, 1)
        assert plan.kv_bytes_per_token == 61 * 576 * 2  # not divided by TP


def test_explicit_size_too_small_for_the_weights_names_the_sizes_that_fit(
    facts: dict[str, ModelFacts],
) -> None:
    result = fit(facts["Llama-3.1-70B-Instruct"], EngineLimits(), H100_X8, 1)
    assert isinstance(result, Refusal)
    assert result.reason == "InsufficientGPUMemory"
    assert "per GPU 131.4 GiB of weights" in result.message
    assert result.message.endswith(
        "On 8 x NVIDIA-H100-80GB-HBM3 (79.6 GiB each), tensorParallelSize 4 or 8 fits."
    )
    assert result.valid_sizes == (4, 8)


def test_explicit_size_whose_kv_cache_does_not_fit_gives_both_ways_out(
    facts: dict[str, ModelFacts],
) -> None:
    result = fit(facts["Llama-3.1-70B-Instruct"], EngineLimits(), H100_X8, 2)
    assert isinstance(result, Refusal)
    assert result.reason == "MaxModelLenTooLong"
    assert result.largest_max_model_len == 25600
    assert "at most 25600" in result.message
    assert "tensorParallelSize 4 or 8 fits" in result.message


def test_explicit_size_above_the_nodes_gpus(facts: dict[str, ModelFacts]) -> None:
    result = fit(facts["Llama-3.1-8B"], EngineLimits(), L4, 2)
    assert isinstance(result, Refusal)
    assert result.reason == "NotEnoughGPUs"
    assert "the node has 1 x NVIDIA-L4 (22.5 GiB each)" in result.message


def test_model_too_large_for_any_size_on_the_node(facts: dict[str, ModelFacts]) -> None:
    result = choose(facts["Llama-3.1-70B-Instruct"], EngineLimits(), A10G_X4)
    assert isinstance(result, Refusal)
    assert result.reason == "ModelTooLarge"
    assert "131.4 GiB of weights" in result.message
    assert "at tensorParallelSize=4 each GPU needs 32.9 GiB of weights" in result.message


def test_max_model_len_above_the_models_own_context_is_refused(
    facts: dict[str, ModelFacts],
) -> None:
    result = fit(facts["Mistral-7B-v0.3"], EngineLimits(max_model_len=65536), H100_X8, 1)
    assert isinstance(result, Refusal)
    assert result.reason == "MaxModelLenAboveModel"
    assert "above the 32768 tokens Mistral-7B-v0.3 takes" in result.message


@pytest.mark.parametrize(
    ("engine_args", "largest"),
    [
        ({}, 26624),
        ({"kv_cache_dtype": "fp8"}, 53248),  # one byte per KV element
        ({"gpu_memory_utilization": 0.95}, 35840),
    ],
)
def test_engine_args_move_the_longest_context_one_l4_holds(
    facts: dict[str, ModelFacts], engine_args: dict[str, Any], largest: int
) -> None:
    limits = EngineLimits.from_engine_args(engine_args)
    assert FactsPlan(facts["Llama-3.1-8B"], limits).largest_max_model_len(L4, 1) == largest


def test_float32_dtype_doubles_the_weights(facts: dict[str, ModelFacts]) -> None:
    limits = EngineLimits.from_engine_args({"dtype": "float32", "max_model_len": 4096})
    plan = budget(facts["Llama-3.1-8B"], limits, H100_X8, 1, 4096)
    assert plan.weights_bytes == 8_030_261_248 * 4


def test_model_without_context_or_size_asks_for_them(facts: dict[str, ModelFacts]) -> None:
    gemma = facts["gemma-3-27b-it"]
    unsized = memory_plan(model(model="google/gemma-3-27b-it").spec, gemma)
    assert isinstance(unsized, UnsizedPlan) and unsized.reason == "ModelSizeUnknown"
    assert "set spec.modelSizeGiB" in unsized.message
    sized_gemma = with_size_hint(gemma, 55)  # spec.modelSizeGiB stands in for the weights
    first = choose(sized_gemma, EngineLimits(), H100_X8)
    assert isinstance(first, Refusal)
    assert first.reason == "MaxModelLenUnknown"
    assert "set spec.engineArgs.max_model_len" in first.message
    # 10 full-attention layers x 16 KV heads of 128 make a 32k sequence 2.5 GiB of KV cache, the
    # 52 sliding-window layers 6.9 GiB (their 1024-token window plus a 16384-token batch):
    # 55 + 9.4 + 2 fits one H100's 71.7 usable GiB (counted in full, 15.5 GiB, it would not).
    sized = choose(sized_gemma, EngineLimits(max_model_len=32768), H100_X8)
    assert isinstance(sized, Sized)
    assert sized.tensor_parallel_size == 1
    assert sized.budget is not None and sized.budget.weights_bytes == 55 * GIB


@pytest.mark.parametrize(
    ("engine_args", "words"),
    [
        ({"max_model_len": "long"}, "max_model_len must be a positive integer"),
        ({"max_model_len": 0}, "max_model_len must be a positive integer"),
        ({"gpu_memory_utilization": "most"}, "gpu_memory_utilization must be a number"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in (0, 1]"),
    ],
)
def test_unusable_engine_args_are_named(engine_args: dict[str, Any], words: str) -> None:
    with pytest.raises(EngineArgError, match=words.replace("(", r"\(").replace("]", r"\]")):
        EngineLimits.from_engine_args(engine_args)


def test_engine_args_as_strings_are_read() -> None:
    limits = EngineLimits.from_engine_args(
        {"max_model_len": "8192", "gpu_memory_utilization": "0.8"}
    )
    assert (limits.max_model_len, limits.gpu_memory_utilization) == (8192, 0.8)
