"""The KV cache one sequence needs, by layer type, on real model configs: within 10 % of what
vLLM 0.32 allocates for it.

The configs are the published config.json fields that size the cache. The reference restates
vLLM's own accounting: `max_memory_usage_bytes` of each layer's spec in
vllm/v1/kv_cache_interface.py (full attention: every token in 16-token blocks; sliding window:
min(window - 1 + tokens in flight, max_model_len) in blocks, plus one; Mamba and gated delta
net: one state per sequence, padded to the attention page in hybrid models, whose attention block
grows to hold it: platforms/interface.py), with the state shapes of
model_executor/layers/mamba/mamba_utils.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from triton_vllm_operator.model_facts import parse_config
from triton_vllm_operator.placement import EngineLimits
from triton_vllm_operator.placement.kv_cache import sequence_bytes

BLOCK = 16  # vLLM's default block size and the attention kernels' alignment
BATCHED = 8192  # max_num_batched_tokens
IN_FLIGHT = 2 * BATCHED  # async scheduling keeps two batches in flight
BF16 = 2


@dataclass(frozen=True)
class VllmLayers:
    """The layer specs vLLM builds for a model, written out from its model code."""

    full: int
    kv_heads: int
    head_dim: int
    sliding: int = 0
    window: int = 0
    state: int = 0
    state_elements: tuple[int, ...] = ()  # per state layer, on one GPU at TP=1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def vllm_bytes(layers: VllmLayers, tp: int, length: int) -> int:
    """One sequence's cache on one GPU as vLLM allocates it."""
    token = max(layers.kv_heads // tp, 1) * 2 * layers.head_dim * BF16  # K and V, one layer
    block = BLOCK
    state = sum(cdiv(e, tp) for e in layers.state_elements) * BF16
    if layers.state:
        block = BLOCK * cdiv(state, BLOCK * token)  # attention page >= the state's page
        state = block * token  # the state padded to the attention page
    full = layers.full * cdiv(length, block) * block * token
    window = min(layers.window - 1 + IN_FLIGHT, length)
    sliding = layers.sliding * (cdiv(window, block) + 1) * block * token
    return full + sliding + layers.state * state


CONFIGS: dict[str, tuple[dict[str, Any], VllmLayers]] = {
    "meta-llama/Llama-3.1-8B": (
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 131072,
            "torch_dtype": "bfloat16",
        },
        VllmLayers(full=32, kv_heads=8, head_dim=128),
    ),
    "Qwen/Qwen2.5-7B-Instruct": (
        {
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_attention_heads": 28,
            "num_hidden_layers": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "max_window_layers": 28,
            "sliding_window": 131072,
            "use_sliding_window": False,
            "torch_dtype": "bfloat16",
        },
        VllmLayers(full=28, kv_heads=4, head_dim=128),
    ),
    "google/gemma-3-27b-it": (
        {
            "architectures": ["Gemma3ForConditionalGeneration"],
            "model_type": "gemma3",
            "text_config": {
                "head_dim": 128,
                "hidden_size": 5376,
                "intermediate_size": 21504,
                "model_type": "gemma3_text",
                "num_attention_heads": 32,
                "num_hidden_layers": 62,
                "num_key_value_heads": 16,
                "sliding_window": 1024,
            },
            "torch_dtype": "bfloat16",
        },
        # Every sixth layer attends globally, the others to the last 1024 tokens.
        VllmLayers(full=10, kv_heads=16, head_dim=128, sliding=52, window=1024),
    ),
    "mistralai/Mistral-7B-v0.1": (
        {
            "architectures": ["MistralForCausalLM"],
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 32768,
            "sliding_window": 4096,
            "torch_dtype": "bfloat16",
        },
        VllmLayers(full=0, kv_heads=8, head_dim=128, sliding=32, window=4096),
    ),
    "ai21labs/Jamba-v0.1": (
        {
            "architectures": ["JambaForCausalLM"],
            "model_type": "jamba",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "attn_layer_period": 8,
            "attn_layer_offset": 4,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "num_experts": 16,
            "num_experts_per_tok": 2,
            "mamba_d_state": 16,
            "mamba_d_conv": 4,
            "mamba_expand": 2,
            "mamba_dt_rank": 256,
            "max_position_embeddings": 262144,
            "torch_dtype": "bfloat16",
        },
        # Mamba1: conv state (8192, 3) and SSM state (8192, 16) per layer.
        VllmLayers(
            full=4, kv_heads=8, head_dim=128, state=28, state_elements=(8192 * 3, 8192 * 16)
        ),
    ),
    "Qwen/Qwen3-Next-80B-A3B-Instruct": (
        {
            "architectures": ["Qwen3NextForCausalLM"],
            "model_type": "qwen3_next",
            "hidden_size": 2048,
            "intermediate_size": 5120,
            "moe_intermediate_size": 512,
            "num_attention_heads": 16,
            "num_hidden_layers": 48,
            "num_key_value_heads": 2,
            "head_dim": 256,
            "full_attention_interval": 4,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 32,
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "linear_conv_kernel_dim": 4,
            "num_experts": 512,
            "num_experts_per_tok": 10,
            "max_position_embeddings": 262144,
            "torch_dtype": "bfloat16",
        },
        # Gated delta net: conv state (2 x 16 x 128 + 32 x 128, 3), recurrent (32, 128, 128).
        VllmLayers(
            full=12, kv_heads=2, head_dim=256, state=36, state_elements=(8192 * 3, 32 * 128 * 128)
        ),
    ),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_layer_types_are_read_from_the_config(name: str) -> None:
    config, layers = CONFIGS[name]
    facts = parse_config(config, name)
    assert facts.full_attention_layers == layers.full
    assert facts.sliding_layers == layers.sliding
    assert facts.state_layers == layers.state
    assert (facts.sliding_window or 0) == layers.window
    assert facts.state_elements == sum(layers.state_elements)


@pytest.mark.parametrize("length", [4096, 32768, 131072])
@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("name", CONFIGS)
def test_one_sequence_needs_what_vllm_allocates_within_ten_percent(
    name: str, tp: int, length: int
) -> None:
    config, layers = CONFIGS[name]
    facts = parse_config(config, name)
    limits = EngineLimits(max_num_batched_tokens=BATCHED)
    ours = sequence_bytes(facts, limits, tp, length)
    theirs = vllm_bytes(layers, tp, length)
    assert abs(ours - theirs) <= 0.1 * theirs, (ours, theirs)


def test_windows_and_states_keep_long_sequences_cheap() -> None:
    """What the layer types are worth at 128k tokens: counted as full attention, the cache of
    Gemma 3 27B is 3.7 times, Mistral 7B v0.1's 6.4, Jamba's 8 and Qwen3-Next's 4 times what
    vLLM allocates."""
    limits = EngineLimits(max_num_batched_tokens=BATCHED)
    ratios = {
        "google/gemma-3-27b-it": 3.67,
        "mistralai/Mistral-7B-v0.1": 6.4,
        "ai21labs/Jamba-v0.1": 7.97,
        "Qwen/Qwen3-Next-80B-A3B-Instruct": 3.95,
    }
    for name, ratio in ratios.items():
        facts = parse_config(CONFIGS[name][0], name)
        every_layer = 2 * facts.layers * facts.kv_heads * facts.head_dim * BF16 * 131072
        assert every_layer / sequence_bytes(facts, limits, 1, 131072) == pytest.approx(ratio, 0.01)
